"""Config checking: the checks and canonical forms the Snakefile needs before any job runs.

``workflow/rules/common.smk`` imports this module while it parses the workflow, so it needs
numpy only (no torch): :func:`check_config` (range checks the JSON schema cannot express,
each message naming the key), :func:`normalize` and :func:`canonical` (canonical settings,
so equal settings compare equal), :func:`owners` (which experiments share data or a fitted
model) and :func:`shard_indices` (the training points of one LOO shard).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import numpy as np

# Settings that decide a dataset / a fitted model. Experiments whose settings agree on these
# share the files of the first such experiment in config order (see ``owners``).
DATA_FIELDS = ("dataset",)
MODEL_FIELDS = ("dataset", "model", "cnn", "l2", "fit")


class ConfigError(ValueError):
    """A config value is out of range; the message names the key (``experiments.X.key``)."""


def canonical(obj):
    """A copy of ``obj`` with every mapping's keys sorted (JSON types only).

    Used for rule params, so that equal settings compare and print equal and Snakemake's
    params rerun trigger fires exactly when a setting changes.
    """
    return json.loads(json.dumps(obj, sort_keys=True))


DATASET_KEYS = {
    "mnist": ("kind", "validation_size", "max_train", "max_test"),
    # model: cnn reads the paper's random subset of the training images instead
    "mnist_cnn": ("kind", "validation_size", "fraction", "subset_seed"),
    # the certified CNN (cnn.protocol: certified) may keep only the first max_train of them
    "mnist_cnn_certified": ("kind", "validation_size", "fraction", "subset_seed", "max_train"),
    "random": ("kind", "n_features", "n_classes", "n_train", "n_test", "seed", "input_std",
               "teacher_scale", "labels", "label_noise"),
}


def normalize(exp: dict) -> dict:
    """Canonical experiment settings; the dataset keeps only the keys of its kind (the schema
    fills defaults for both kinds), so equal datasets compare equal."""
    exp = canonical(exp)
    ds = exp["dataset"]
    cnn = exp.get("model") == "cnn"
    certified = cnn and is_certified(exp)
    kind = ("mnist_cnn_certified" if certified else "mnist_cnn") if cnn and ds["kind"] == "mnist" else ds["kind"]
    exp["dataset"] = {k: ds.get(k) for k in DATASET_KEYS[kind]}
    # the schema fills every model's sections with defaults: keep this model's only (the
    # certified CNN runs through the linear models' rules: it keeps their sections too)
    for section in (() if certified else ("fit", "cg", "lissa", "loo") if cnn else ("cnn",)):
        exp.pop(section, None)
    return canonical(exp)


def is_certified(exp: dict) -> bool:
    """Whether an experiment runs through the pipeline's rules (data -> train -> influence_cg
    -> select -> influence_lissa -> loo_factor -> loo_shard -> loo_gather -> figures): every
    linear model, and the CNN with ``cnn.protocol: certified`` (a certified local minimum);
    the CNN's paper protocol (SGD, continued training) has its own rules (cnn.smk)."""
    return exp.get("model", "logreg") != "cnn" or (exp.get("cnn") or {}).get("protocol") == "certified"


def settings_of(exp: dict, fields: Sequence[str]) -> dict:
    """The canonical sub-dict of an experiment's settings named by ``fields``."""
    return canonical({f: exp.get(f) for f in fields})


def owners(experiments: dict, fields: Sequence[str]) -> dict[str, str]:
    """Map each experiment to the first experiment (config order) with equal ``fields``.

    ``owners(exps, MODEL_FIELDS)["mnist_logreg_tests"] == "mnist_logreg"`` when both use the
    same data, model and L2: the second reuses the first's trained model.
    """
    first: dict[str, str] = {}
    out = {}
    for name, exp in experiments.items():
        key = json.dumps(settings_of(exp, fields), sort_keys=True)
        out[name] = first.setdefault(key, name)
    return out


def dataset_shape(ds: dict, mnist_counts: tuple[int, int] | None = None,
                  model: str = "logreg") -> tuple[int, int]:
    """(n_train, n_test) an experiment's dataset settings give.

    For MNIST, ``mnist_counts`` are the image counts in the raw files (None: the canonical
    60000 / 10000); the first ``validation_size`` training images are held out. For
    ``model='cnn'`` the training set is the share ``fraction`` of the rest
    (``infcore.data.small_mnist_indices``: 5,500 for the paper's 0.1).
    """
    if ds["kind"] == "random":
        return int(ds["n_train"]), int(ds["n_test"])
    n_all, n_test = mnist_counts or (60000, 10000)
    n_train = n_all - int(ds.get("validation_size", 5000))
    if model == "cnn":
        n_train = int(n_train * float(ds.get("fraction", 1.0)))
        if ds.get("max_train") is not None:
            n_train = min(n_train, int(ds["max_train"]))
        return n_train, n_test
    if ds.get("max_train") is not None:
        n_train = min(n_train, int(ds["max_train"]))
    if ds.get("max_test") is not None:
        n_test = min(n_test, int(ds["max_test"]))
    return n_train, n_test


def check_config(config: dict, mnist_counts: tuple[int, int] | None = None) -> None:
    """Range checks the JSON schema cannot express; raises ConfigError listing every problem.

    Each message names the key, e.g. ``experiments.mnist_logreg.top_k = 60000 exceeds n_train
    = 55000``.
    """
    errors = []
    experiments = config.get("experiments", {})
    for name, exp in experiments.items():
        key = f"experiments.{name}"
        ds = exp["dataset"]
        if ds["kind"] == "mnist":
            extra = [k for k in DATASET_KEYS["random"] if k in ds and k not in DATASET_KEYS["mnist"]
                     and k in ("n_features", "n_classes", "n_train", "n_test")]
            for k in extra:
                errors.append(f"{key}.dataset.{k} applies to random datasets only "
                              "(MNIST: use max_train / max_test)")
            n_all = (mnist_counts or (60000, 10000))[0]
            vs = int(ds.get("validation_size", 5000))
            if vs >= n_all:
                errors.append(f"{key}.dataset.validation_size = {vs} leaves no training points "
                              f"(the MNIST files hold {n_all} training images)")
                continue
        model = exp.get("model", "logreg")
        if model == "cnn":
            cnn_errors = _check_cnn(key, exp, ds, config.get("cnn_device"))
            errors += cnn_errors
            if cnn_errors and ds["kind"] != "mnist":
                continue
        else:
            for k, default in (("fraction", 1.0), ("subset_seed", 0)):
                if ds.get(k, default) != default:
                    errors.append(f"{key}.dataset.{k} applies to model: cnn only "
                                  "(linear models: use max_train)")
        n_train, n_test = dataset_shape(ds, mnist_counts, model)
        for i, t in enumerate(exp["test_indices"]):
            if not 0 <= int(t) < n_test:
                errors.append(f"{key}.test_indices[{i}] = {t} is outside the test set "
                              f"(n_test = {n_test}, valid indices 0..{n_test - 1})")
        dup = sorted({t for t in exp["test_indices"] if exp["test_indices"].count(t) > 1})
        if dup:
            errors.append(f"{key}.test_indices repeats {dup}")
        if int(exp["top_k"]) > n_train:
            errors.append(f"{key}.top_k = {exp['top_k']} exceeds n_train = {n_train}")
        lissa = exp.get("lissa", {})
        if int(lissa.get("batch_size", 1)) > n_train:
            errors.append(f"{key}.lissa.batch_size = {lissa['batch_size']} exceeds n_train = {n_train}")
    pf = config.get("paper_figure") or {}
    cert = pf.get("certified")
    if cert is not None:
        if cert not in experiments:
            errors.append(f"paper_figure.certified = {cert!r} is not an experiment "
                          f"(experiments: {', '.join(experiments) or 'none'})")
        elif not (experiments[cert].get("model") == "cnn" and is_certified(experiments[cert])):
            errors.append(f"paper_figure.certified = {cert!r} is not a model: cnn experiment with "
                          "cnn.protocol: certified")
    for role in ("linear", "cnn"):
        target = pf.get(role)
        if role == "linear" and target is not None and target not in experiments:
            errors.append(f"paper_figure.linear = {target!r} is not an experiment "
                          f"(experiments: {', '.join(experiments) or 'none'})")
        want = "cnn" if role == "cnn" else "logreg"
        if target is not None and target in experiments and experiments[target].get("model", "logreg") != want:
            errors.append(f"paper_figure.{role} = {target!r} is an experiment with model: "
                          f"{experiments[target].get('model', 'logreg')}, not {want}")
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))


def _check_cnn(key: str, exp: dict, ds: dict, device_override: str | None = None) -> list[str]:
    """Checks of a ``model: cnn`` experiment the schema cannot express (``device_override``:
    the top-level ``cnn_device``)."""
    errors = []
    if ds["kind"] != "mnist":
        return [f"{key}.dataset.kind = {ds['kind']!r}: model: cnn needs kind: mnist (28x28 images)"]
    c = exp.get("cnn") or {}
    device = device_override or c.get("device", "cpu")
    if c.get("engine") == "graph" and device != "cuda":
        errors.append(f"{key}.cnn.engine = 'graph' (CUDA graphs) needs CUDA but the device is "
                      f"{device!r} (set cnn.device: cuda or --config cnn_device=cuda, or "
                      "engine: auto)")
    for k in ("max_test",) if is_certified(exp) else ("max_train", "max_test"):
        if ds.get(k) is not None:
            errors.append(f"{key}.dataset.{k} applies to linear models only (model: cnn: use fraction"
                          + (")" if k == "max_test" else "; max_train needs cnn.protocol: certified)"))
    tr = c.get("train") or {}
    steps, factors = tr.get("decay_steps", [110000, 220000]), tr.get("decay_factors", [0.1, 0.01])
    if len(steps) != len(factors):
        errors.append(f"{key}.cnn.train.decay_factors has {len(factors)} entries but "
                      f"{key}.cnn.train.decay_steps has {len(steps)} (one factor per decay step)")
    if list(steps) != sorted(steps):
        errors.append(f"{key}.cnn.train.decay_steps = {steps} is not ascending")
    return errors


def parse_scatteritem(item: str) -> tuple[int, int]:
    """``"2-of-4"`` -> (2, 4) (Snakemake's scatteritem, 1-based)."""
    i, _, n = item.partition("-of-")
    i, n = int(i), int(n)
    if not 1 <= i <= n:
        raise ValueError(f"bad scatter item {item!r}")
    return i, n


def shard_indices(selections: Iterable, shard: int, shards: int) -> np.ndarray:
    """Training points of LOO shard ``shard`` (1-based) of ``shards``.

    The union of all selected points, sorted ascending, cut into ``shards`` contiguous parts
    of near-equal size (``numpy.array_split``); shards may be empty when there are fewer
    points than shards. Joining the shards in order gives the sorted union back.
    """
    union = np.unique(np.concatenate([np.asarray(s, dtype=np.int64).reshape(-1) for s in selections]
                                     or [np.zeros(0, np.int64)]))
    part = np.array_split(union, shards)[shard - 1]
    return part.copy()
