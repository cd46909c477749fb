"""The CNN rules (Figure 2, 'CNN' panel) through the real snakemake CLI: a tiny end-to-end
run on fake MNIST files, config checks naming the key, and the run_cnn / fig2_cnn switch.

Each test copies the workflow into a scratch folder, so nothing is written into the repo.
"""

from __future__ import annotations

import copy
import csv
import json
import math

import pytest
from infcore.config import is_certified, normalize
from workflow_utils import (
    REPO,
    SESSION_CONFIG,
    config_error,
    copy_workflow,
    dry_run_jobs,
    job_counts,
    load_yaml,
    nothing_to_do,
    run_snakemake,
    session_config,
    write_yaml,
)

DEFAULT = load_yaml(REPO / "config" / "config.yaml")
SMOKE = load_yaml(REPO / "config" / "cnn_smoke.yaml")
CNN_RULES = {"cnn_train", "cnn_influence", "cnn_loo_shard", "cnn_control", "cnn_gather", "cnn_figure"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# The session's tiny run (workflow_utils.session_config: config/tiny.yaml plus tiny_cnn, the
# smoke configuration cut down to seconds), shared with tests/test_workflow.py.
TINY_CNN = session_config()


@pytest.fixture(scope="module")
def wf(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("wf_cnn"))


# ---------------------------------------------------------------------- switch and target


def test_default_dry_run_has_no_cnn_jobs(wf):
    res = run_snakemake(wf, "-n", "--cores", "2")
    assert res.returncode == 0, res.stdout
    assert not CNN_RULES & set(job_counts(res.stdout)), job_counts(res.stdout)
    assert DEFAULT["run_cnn"] is False and DEFAULT["paper_figure"]["cnn"] == "mnist_cnn"
    exp = DEFAULT["experiments"]["mnist_cnn"]  # the paper's values
    assert exp["top_k"] == 100 and exp["test_indices"] == [6558]
    assert exp["cnn"]["train"]["steps"] == 500000 and exp["cnn"]["loo"]["steps"] == 30000
    assert exp["cnn"]["influence"]["damping"] == 0.01 and exp["cnn"]["influence"]["hvp_batch_size"] == 100


@pytest.mark.parametrize("how", ["run_cnn", "fig2_cnn"])
def test_run_cnn_or_target_adds_cnn_jobs(wf, how):
    # the target first: --set-scatter / --config take every value that follows them
    pre, post = (["fig2_cnn"], []) if how == "fig2_cnn" else ([], ["--config", "run_cnn=True"])
    res = run_snakemake(wf, *pre, "-n", "--cores", "2", "--set-scatter", "loo=3", *post)
    assert res.returncode == 0, res.stdout
    counts = job_counts(res.stdout)
    # own scatter name: --set-scatter loo=3 changes the linear shards only
    assert counts["cnn_loo_shard"] == DEFAULT["cnn_loo_shards"]
    # the pipeline experiments: linear models and the certified CNN (common.smk's PIPELINE)
    pipeline = [n for n, e in DEFAULT["experiments"].items() if is_certified(normalize(e))]
    assert counts["loo_shard"] == 3 * len(pipeline)
    for rule in ("cnn_train", "cnn_influence", "cnn_control", "cnn_gather", "cnn_figure", "summary", "paper_figure"):
        assert counts[rule] == 1, rule
    jobs = dry_run_jobs(res.stdout)
    assert "results/mnist_cnn/figure.png" in {o for j in jobs if j["rule"] == "cnn_figure" for o in j["output"]}
    res = run_snakemake(wf, *pre, "-n", "--cores", "2", "--set-scatter", "cnn_loo=5", *post)
    assert job_counts(res.stdout)["cnn_loo_shard"] == 5


# ---------------------------------------------------------------------------- bad configs


def _set(cfg, path, value):
    node = cfg
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value


E = ["experiments", "mnist_cnn"]
BAD = [
    ("top-k-exceeds-subset", E + ["top_k"], 5501, ["experiments.mnist_cnn.top_k = 5501 exceeds n_train = 5500"]),
    ("test-index", E + ["test_indices"], [10000],
     ["experiments.mnist_cnn.test_indices[0] = 10000 is outside the test set"]),
    ("device", E + ["cnn", "device"], "tpu", ["experiments.mnist_cnn.cnn.device", "'tpu' is not one of"]),
    ("unknown-key", E + ["cnn", "train", "step"], 5, ["experiments.mnist_cnn.cnn.train", "'step' was unexpected"]),
    ("bad-type", E + ["cnn", "influence", "damping"], "1e-2",
     ["experiments.mnist_cnn.cnn.influence.damping", "is not of type 'number'"]),
    ("streams", E + ["cnn", "loo", "streams"], "own", ["experiments.mnist_cnn.cnn.loo.streams"]),
    ("fraction", E + ["dataset", "fraction"], 1.5, ["experiments.mnist_cnn.dataset.fraction"]),
    ("decay-lengths", E + ["cnn", "train", "decay_factors"], [0.1],
     ["experiments.mnist_cnn.cnn.train.decay_factors has 1 entries"]),
    ("random-data", E + ["dataset"], {"kind": "random", "n_features": 4, "n_classes": 2, "n_train": 10, "n_test": 5},
     ["experiments.mnist_cnn.dataset.kind = 'random': model: cnn needs kind: mnist"]),
    ("fraction-on-linear", ["experiments", "mnist_logreg", "dataset", "fraction"], 0.1,
     ["experiments.mnist_logreg.dataset.fraction applies to model: cnn only"]),
    ("paper-figure-cnn-not-cnn", ["paper_figure", "cnn"], "random_small",
     ["paper_figure.cnn = 'random_small' is an experiment with model: logreg, not cnn"]),
    ("cnn-device", ["cnn_device"], "gpu", ["cnn_device", "'gpu' is not one of"]),
]


@pytest.mark.parametrize("path,value,expected", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_cnn_config_is_rejected_naming_the_key(wf, path, value, expected):
    """The Snakefile's config check run in this process (one CLI case: tests/test_workflow.py)."""
    cfg = copy.deepcopy(DEFAULT)
    _set(cfg, path, value)
    message = config_error(cfg, wf)
    assert message is not None
    for text in expected:
        assert text in message, f"{text!r} not in:\n{message}"


def test_smoke_config_is_valid_and_reduced(wf):
    res = run_snakemake(wf, "-n", "--cores", "2", "--configfile", "config/cnn_smoke.yaml")
    assert res.returncode == 0, res.stdout
    counts = job_counts(res.stdout)
    assert counts["cnn_loo_shard"] == SMOKE["cnn_loo_shards"] and counts["cnn_figure"] == 1
    c = SMOKE["experiments"]["mnist_cnn_smoke"]["cnn"]
    assert c["train"]["steps"] <= 2000 and c["loo"]["steps"] <= 500


# ---------------------------------------------------------------------- tiny end to end


@pytest.fixture(scope="module")
def tiny_cnn(tiny_run):
    return tiny_run


def test_tiny_cnn_figure_and_json(tiny_cnn):
    res = tiny_cnn / "results"
    png = (res / "tiny_cnn" / "figure.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 10_000
    assert (res / "tiny_cnn" / "figure.pdf").read_bytes()[:4] == b"%PDF"
    rec = json.loads((res / "tiny_cnn" / "figure.json").read_text())
    assert rec["model"] == "cnn" and rec["n_train"] == 500 and rec["test_indices"] == [3, 7]
    panels = {(p["test_index"], p["panel"]): p for p in rec["panels"]}
    assert set(panels) == {(t, p) for t in (3, 7) for p in ("CNN", "CNN (controlled)")}
    for p in rec["panels"]:
        assert p["n_points"] == 6
        for key in ("pearson", "spearman"):
            assert p[key] is not None and math.isfinite(p[key]) and -1 <= p[key] <= 1, p
    for t in (3, 7):
        paper, ctl = panels[(t, "CNN")], panels[(t, "CNN (controlled)")]
        assert paper["baseline"] == "theta_hat" and ctl["baseline"] == "control"
        assert paper["pearson_controlled"] == ctl["pearson"]
    with open(res / "tiny_cnn" / "figure.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 6
    # shared stream: both baselines differ by the control's drift, the same for every point
    for t in (3, 7):
        a = {r["train_index"]: float(r["actual"]) for r in rows if int(r["test_index"]) == t and r["panel"] == "CNN"}
        c = {r["train_index"]: float(r["actual"]) for r in rows
             if int(r["test_index"]) == t and r["panel"] == "CNN (controlled)"}
        shifts = {round(a[i] - c[i], 6) for i in a}
        assert len(shifts) == 1 and math.isclose(shifts.pop(), panels[(t, "CNN")]["control_drift"], abs_tol=1e-5)
    loo = json.loads((res / "tiny_cnn" / "cnn" / "loo" / "loo.json").read_text())
    assert loo["shards"] == 2 and loo["points"] <= 12 and loo["steps"] == 20
    train = json.loads((res / "tiny_cnn" / "cnn" / "train.json").read_text())
    assert train["steps"] == 60 and train["dim"] > 0
    for log in ("logs/cnn_train/tiny_cnn.log", "logs/cnn_loo_shard/tiny_cnn/1-of-2.log",
                "logs/cnn_influence/tiny_cnn/test_3.log", "logs/cnn_figure/tiny_cnn.log"):
        assert (tiny_cnn / log).stat().st_size > 0, log
    assert (tiny_cnn / "benchmarks/cnn_train/tiny_cnn.tsv").exists()


def test_tiny_cnn_values_equal_the_library_on_the_same_inputs(tiny_cnn):
    """The workflow's CNN predictions are the library's (infcore.cnn.steps.influence_test_point
    in this process on the run's data and trained state): float32 network, float64 CG, so
    1e-5 relative (float32 round-off ~1e-7 amplified by at most 8 CG iterations on a damped
    Hessian with condition < 1e2); the figure's y values are those predictions exactly, and its
    Pearson, Spearman and slope are infcore.metrics' on the figure's rows (1e-12)."""
    import torch
    import wfio
    from infcore.cnn.steps import influence_test_point, load_data
    from infcore.metrics import pearson, slope, spearman

    res = tiny_cnn / "results" / "tiny_cnn"
    exp = TINY_CNN["experiments"]["tiny_cnn"]
    train = json.loads((res / "cnn" / "train.json").read_text())
    settings = {**train["settings"], "influence": exp["cnn"]["influence"], "top_k": exp["top_k"]}
    d = load_data(settings, str(tiny_cnn / TINY_CNN["mnist_root"]))
    state = wfio.load_torch(res / "cnn" / "train.pt")
    with open(res / "figure.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rec = json.loads((res / "figure.json").read_text())
    for t in exp["test_indices"]:
        ours = wfio.load_torch(res / "cnn" / "influence" / f"test_{t}.pt")["pred"]
        _, lib, _ = influence_test_point(settings, d, state, t, log=lambda m: None, warn=lambda m: None)
        err = float((ours - lib["pred"]).abs().max() / lib["pred"].abs().max())
        assert err <= 1e-5, (t, err)
        for panel in ("CNN", "CNN (controlled)"):
            sel = [r for r in rows if int(r["test_index"]) == t and r["panel"] == panel]
            pred = [float(r["predicted"]) for r in sel]
            assert pred == [float(ours[int(r["train_index"])]) for r in sel]
            actual = [float(r["actual"]) for r in sel]
            p = next(p for p in rec["panels"] if p["test_index"] == t and p["panel"] == panel)
            assert abs(p["pearson"] - pearson(pred, actual)) <= 1e-12
            assert abs(p["spearman"] - spearman(pred, actual)) <= 1e-12
            if p.get("slope") is not None:
                assert abs(p["slope"] - slope(pred, actual)) <= 1e-12 * max(1.0, abs(p["slope"]))
    assert torch.is_tensor(ours)


def test_tiny_cnn_in_figure2_and_summary(tiny_cnn):
    res = tiny_cnn / "results"
    fig2 = json.loads((res / "figure2.json").read_text())
    assert [p["panel"] for p in fig2["panels"]] == ["Linear (exact)", "Linear (approx)", "CNN"]
    cnn = fig2["panels"][2]
    assert cnn["test_index"] == 3 and math.isfinite(cnn["pearson"])
    md = (res / "figure2.md").read_text()
    assert "| CNN |" in md and "| 0.86 |" in md
    with open(res / "summary.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["experiment"] == "tiny_cnn"]
    assert {(int(r["test_index"]), r["panel"]) for r in rows} == {
        (t, p) for t in (3, 7) for p in ("CNN", "CNN (controlled)")}


def test_tiny_cnn_rerun_and_param_change(tiny_cnn):
    res = run_snakemake(tiny_cnn, "-n", "--cores", "2", "--configfile", SESSION_CONFIG)
    assert res.returncode == 0 and nothing_to_do(res.stdout), res.stdout
    cfg = copy.deepcopy(TINY_CNN)
    cfg["experiments"]["tiny_cnn"]["cnn"]["loo"]["steps"] = 30
    write_yaml(tiny_cnn / "config" / "changed.yaml", cfg)
    res = run_snakemake(tiny_cnn, "-n", "--cores", "2", "--configfile", "config/changed.yaml")
    assert res.returncode == 0, res.stdout
    rules = {j["rule"] for j in dry_run_jobs(res.stdout)}
    assert {"cnn_loo_shard", "cnn_control", "cnn_gather", "cnn_figure"} <= rules
    assert not rules & {"cnn_train", "cnn_influence", "train", "influence_cg"}, rules
    # with run_cnn false the existing CNN results still feed Figure 2 (no rebuild, no loss)
    cfg = copy.deepcopy(TINY_CNN)
    cfg["run_cnn"] = False
    write_yaml(tiny_cnn / "config" / "off.yaml", cfg)
    res = run_snakemake(tiny_cnn, "-n", "--cores", "2", "--configfile", "config/off.yaml")
    assert res.returncode == 0 and nothing_to_do(res.stdout), res.stdout
