# Config validation, shared settings and path helpers for all rule files.

import re
import sys
from pathlib import Path

import jsonschema
from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir) / "workflow" / "scripts"))

from infcore.config import (  # noqa: E402
    DATA_FIELDS,
    MODEL_FIELDS,
    ConfigError,
    canonical,
    check_config,
    is_certified,
    normalize,
    owners,
)
from infcore.mnist import (  # noqa: E402
    MnistFileError,
    mnist_counts,
    mnist_raw_dir,
    mnist_raw_files,
)


def validate_config(cfg):
    """Schema validation (fills defaults) with one readable message naming the key."""
    try:
        validate(cfg, "../../config/schema.yaml")
    except WorkflowError as err:
        ve = err.__context__  # snakemake raises while handling jsonschema's error
        if not isinstance(ve, jsonschema.ValidationError):
            raise
        where = "".join(
            f"[{p}]" if isinstance(p, int) else f".{p}" for p in ve.absolute_path
        ).lstrip(".")
        raise WorkflowError(f"Invalid config at {where or '(top level)'}: {ve.message}") from None
    try:
        check_config(cfg, mnist_counts(cfg["mnist_root"]))
    except (ConfigError, MnistFileError) as err:
        raise WorkflowError(str(err)) from None


validate_config(config)

# Canonical settings (sorted keys; dataset keys of its kind only) of every experiment.
EXPERIMENTS = {name: normalize(exp) for name, exp in config["experiments"].items()}
# Experiments with the same data (and model) reuse the files of the first one in config order.
DATA_OWNER = owners(EXPERIMENTS, DATA_FIELDS)
MODEL_OWNER = owners(EXPERIMENTS, MODEL_FIELDS)
# Experiments the linear rules handle, and the CNN experiments (workflow/rules/cnn.smk).
# PIPELINE: the linear models and the certified CNN (cnn.protocol: certified), which run
# through the same rules (data -> train -> influence_cg -> select -> influence_lissa ->
# loo_factor -> loo_shard -> loo_gather -> figures); CNN: the paper-protocol CNN experiments.
PIPELINE = [name for name, exp in EXPERIMENTS.items() if is_certified(exp)]
CNN = [name for name, exp in EXPERIMENTS.items() if not is_certified(exp)]
# Extra targets of `rule all`; other rule files (e.g. cnn.smk) may append to this list.
EXTRA_TARGETS = []


def name_regex(names):
    """A wildcard constraint matching exactly these names (nothing if empty)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


wildcard_constraints:
    experiment=name_regex(EXPERIMENTS),
    test=r"\d+",


def exp_settings(wildcards, *fields):
    """Canonical sub-settings of the wildcard's experiment (rule params)."""
    exp = EXPERIMENTS[wildcards.experiment]
    return canonical({f: exp.get(f) for f in fields})


def dataset_path(wildcards, name="dataset.pt"):
    return f"resources/datasets/{DATA_OWNER[wildcards.experiment]}/{name}"


def data_inputs(wildcards):
    """The raw MNIST files for an MNIST experiment; nothing for random data."""
    if EXPERIMENTS[wildcards.experiment]["dataset"]["kind"] == "mnist":
        return [str(p) for p in mnist_raw_files(config["mnist_root"])]
    return []


def theta_path(wildcards):
    return f"results/{MODEL_OWNER[wildcards.experiment]}/train/theta.pt"


def factor_path(wildcards):
    return f"results/{MODEL_OWNER[wildcards.experiment]}/loo/chord_factor.pt"


def cg_factor_input(wildcards):
    """The LOO chord factor where CG uses it as its preconditioner (cg.preconditioner: chord)."""
    if EXPERIMENTS[wildcards.experiment]["cg"]["preconditioner"] == "chord":
        return factor_path(wildcards)
    return []


def gn_inputs(wildcards):
    """The Gauss-Newton influence of a test point where the experiment asks for it
    (gauss_newton: true): the figure_point rule's optional inputs."""
    if not EXPERIMENTS[wildcards.experiment]["gauss_newton"]:
        return {}
    base = f"results/{wildcards.experiment}/influence_gn/test_{wildcards.test}"
    return {"gn": f"{base}.csv", "gn_info": f"{base}.json"}


def train_info_path(wildcards):
    return f"results/{MODEL_OWNER[wildcards.experiment]}/train/train.json"


def test_files(pattern):
    """Input function: ``pattern`` expanded over the experiment's test indices."""

    def files(wildcards):
        tests = EXPERIMENTS[wildcards.experiment]["test_indices"]
        return [pattern.format(experiment=wildcards.experiment, test=t) for t in tests]

    return files


def pipeline_threads(linear):
    """Threads of a pipeline rule: ``linear`` for the linear models; 1 for the certified CNN,
    whose tiny convolutions only lose to thread synchronisation (measured on this project's
    2-core machine under load: a tiny CNN test 366 s with 2 threads, 11 s with 1)."""

    def threads(wildcards):
        return 1 if EXPERIMENTS[wildcards.experiment]["model"] == "cnn" else linear

    return threads


def mem_mb(wildcards, attempt):
    """Rough memory need (MB) of the linear-model rules: data, a few (dim x dim) matrices."""
    exp = EXPERIMENTS[wildcards.experiment]
    ds = exp["dataset"]
    d, k = (784, 10) if ds["kind"] == "mnist" else (ds["n_features"], ds["n_classes"])
    n = 60000 if ds["kind"] == "mnist" else ds["n_train"] + ds["n_test"]
    dim = d * k
    return int((1024 + (3 * dim * dim * 8 + 4 * n * d * 8) / 1e6) * attempt)


def cnn_requested():
    """Whether this run builds the CNN experiments: run_cnn, or the target fig2_cnn (the
    targets are known when input functions are evaluated, not while the file is parsed)."""
    dag = getattr(workflow, "dag_settings", None)
    return bool(config["run_cnn"]) or "fig2_cnn" in (getattr(dag, "targets", None) or ())


def cnn_included(name):
    """A CNN experiment's figure is an input of the summary / Figure 2 when this run builds
    it or when its results/{name}/figure.csv exists (from an earlier run)."""
    return (name in CNN and cnn_requested()) or Path(f"results/{name}/figure.csv").exists()


def figure_experiments():
    """Experiments whose results/{name}/figure.json the summary table reads."""
    return PIPELINE + [name for name in CNN if cnn_included(name)]


_cnn = config["paper_figure"]["cnn"]
if _cnn and not Path(f"results/{_cnn}/figure.csv").exists():
    if _cnn not in EXPERIMENTS:
        logger.warning(
            f"paper_figure.cnn = {_cnn!r} is not an experiment here and results/{_cnn}/figure.csv "
            "does not exist: Figure 2 gets the two linear panels only."
        )
    elif not config["run_cnn"]:
        logger.info(
            f"paper_figure.cnn = {_cnn!r} has no results yet and run_cnn is false: Figure 2 gets "
            "the 'CNN' panel only with the target fig2_cnn (or --config run_cnn=True)."
        )


def paper_figure_inputs(wildcards):
    pf = config["paper_figure"]
    lin, cnn = pf["linear"], pf["cnn"]
    files = {"linear_csv": f"results/{lin}/figure.csv", "linear_json": f"results/{lin}/figure.json"}
    cert = pf.get("certified")
    if cert and cert in PIPELINE:
        files.update(
            certified_csv=f"results/{cert}/figure.csv",
            certified_json=f"results/{cert}/figure.json",
        )
    if cnn and cnn_included(cnn):
        files.update(cnn_csv=f"results/{cnn}/figure.csv", cnn_json=f"results/{cnn}/figure.json")
    return files


def summary_inputs(wildcards):
    return [f"results/{name}/figure.json" for name in figure_experiments()]


def first_test(name):
    return EXPERIMENTS[name]["test_indices"][0] if name in EXPERIMENTS else None


def all_targets():
    """Targets of the default target: every linear experiment; the CNN ones when run_cnn."""
    targets = ["results/summary.csv", "results/summary.md"]
    for name in PIPELINE + (CNN if config["run_cnn"] else []):
        targets += [f"results/{name}/figure.{ext}" for ext in ("png", "pdf", "csv", "json")]
    for name in PIPELINE:
        targets += [
            f"results/{name}/test_{t}/figure.png" for t in EXPERIMENTS[name]["test_indices"]
        ]
    if config["paper_figure"]["linear"]:
        targets += [f"results/figure2.{ext}" for ext in ("png", "pdf", "json", "md")]
    return targets + EXTRA_TARGETS


# CNN experiments (workflow/rules/cnn.smk)


def cnn_device(name):
    """cpu or cuda: the top-level cnn_device (e.g. --config cnn_device=cuda) or the experiment's."""
    return config["cnn_device"] or EXPERIMENTS[name]["cnn"]["device"]


def cnn_model_settings(name):
    """What decides a trained CNN (experiments agreeing on it share the model)."""
    exp = EXPERIMENTS[name]
    return canonical(
        {
            "dataset": exp["dataset"],
            "l2": exp["l2"],
            "width": exp["cnn"]["width"],
            "train": exp["cnn"]["train"],
            "device": cnn_device(name),
            "engine": exp["cnn"]["engine"],
        }
    )


CNN_MODEL_OWNER = owners(
    {name: cnn_model_settings(name) for name in CNN},
    ("dataset", "l2", "width", "train", "device", "engine"),
)


def cnn_params(*parts):
    """Rule params: the model settings plus the named parts of the experiment's cnn section
    (and top-level keys: top_k, test_indices), canonical, so a change reruns only the rules
    that use it."""

    def settings(wildcards):
        exp = EXPERIMENTS[wildcards.experiment]
        out = cnn_model_settings(wildcards.experiment)
        for part in parts:
            out[part] = exp["cnn"][part] if part in exp["cnn"] else exp[part]
        return canonical(out)

    return settings


def cnn_state(wildcards):
    return f"results/{CNN_MODEL_OWNER[wildcards.experiment]}/cnn/train.pt"


def cnn_train_info(wildcards):
    return f"results/{CNN_MODEL_OWNER[wildcards.experiment]}/cnn/train.json"


def fig2_cnn_inputs(wildcards):
    files = [
        f"results/{name}/figure.{ext}" for name in CNN for ext in ("png", "pdf", "csv", "json")
    ]
    files += ["results/summary.csv", "results/summary.md"]
    if config["paper_figure"]["linear"] and config["paper_figure"]["cnn"] in CNN:
        files += [f"results/figure2.{ext}" for ext in ("png", "pdf", "json", "md")]
    return files
