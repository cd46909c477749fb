"""The Snakemake workflow through the real CLI: lint, dry runs, config errors, a tiny run.

Each test copies the workflow into a scratch folder, so nothing is written into the repo.
"""

from __future__ import annotations

import copy
import csv
import json
import re
import shutil

import pytest
import wfio
from infcore.config import DATA_FIELDS, MODEL_FIELDS, is_certified, normalize, owners
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
# the experiments the pipeline rules run (linear models and the certified CNN; the paper-
# protocol CNN is off by default: tests/test_cnn_workflow.py), and which of them share data
# and a fitted model, derived from the config as common.smk derives them
_NORM = {n: normalize(e) for n, e in DEFAULT["experiments"].items()}
LINEAR = {n: DEFAULT["experiments"][n] for n, e in _NORM.items() if is_certified(e)}
DATA_OWNER, MODEL_OWNER = owners(_NORM, DATA_FIELDS), owners(_NORM, MODEL_FIELDS)
TINY = load_yaml(REPO / "config" / "tiny.yaml")
# the session's tiny run: config/tiny.yaml plus tiny_cnn (workflow_utils.session_config)
SESSION = session_config()
LINEAR_TINY = {n: e for n, e in SESSION["experiments"].items() if e.get("model", "logreg") == "logreg"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def wf(tmp_path_factory):
    """A scratch copy of the workflow (no data), shared by the lint and dry-run tests."""
    return copy_workflow(tmp_path_factory.mktemp("wf"))


# ------------------------------------------------------------------------ lint, dry runs


def test_lint_is_clean(wf):
    res = run_snakemake(wf, "--lint")
    assert res.returncode == 0, res.stdout
    assert "Congratulations, your workflow is in a good condition" in res.stdout, res.stdout


def test_every_rule_has_a_one_line_docstring(wf):
    """`snakemake --list-rules` prints `name (docstring)`: every rule says what it does."""
    res = run_snakemake(wf, "--list-rules", "--nocolor")
    assert res.returncode == 0, res.stdout
    listed = [line for line in res.stdout.splitlines() if re.fullmatch(r"\w+( \(.+\))?", line)]
    assert len(listed) >= 20, res.stdout  # mnist_download is defined too (no MNIST files here)
    bare = [line for line in listed if " (" not in line]
    assert not bare, f"rules without a docstring: {bare}"


def test_snakemake_files_are_snakefmt_clean():
    """The Snakefile and workflow/rules/*.smk as `snakefmt` formats them (config in pyproject)."""
    import shutil
    import subprocess

    exe = shutil.which("snakefmt")
    if exe is None:
        pytest.skip("snakefmt not installed (pip install snakefmt; requirements.txt lists it)")
    res = subprocess.run([exe, "--check", "--diff", "Snakefile", "workflow/rules"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]


def test_dry_run_default_config(wf):
    res = run_snakemake(wf, "-n", "--cores", "2")
    assert res.returncode == 0, res.stdout
    counts = job_counts(res.stdout)
    n_tests = sum(len(e["test_indices"]) for e in LINEAR.values())
    n_exp = len(LINEAR)
    assert counts["mnist_download"] == 4  # no MNIST files in the scratch copy: one job each
    # e.g. mnist_logreg_tests shares data and model with mnist_logreg
    assert counts["data"] == len({DATA_OWNER[n] for n in LINEAR}) < n_exp
    assert counts["train"] == counts["loo_factor"] == len({MODEL_OWNER[n] for n in LINEAR})
    for rule in ("influence_cg", "select", "influence_lissa", "figure_point"):
        assert counts[rule] == n_tests, rule
    assert counts["loo_shard"] == n_exp * DEFAULT["loo_shards"]
    assert counts["loo_gather"] == counts["figure"] == n_exp
    assert counts["summary"] == counts["paper_figure"] == 1
    jobs = dry_run_jobs(res.stdout)
    train_outputs = {o for j in jobs if j["rule"] == "train" for o in j["output"]}
    assert "results/mnist_logreg/train/theta.pt" in train_outputs
    assert not any("mnist_logreg_tests/train" in o for o in train_outputs)


def test_set_scatter_overrides_shard_count(wf):
    res = run_snakemake(wf, "-n", "--cores", "2", "--set-scatter", "loo=3")
    assert res.returncode == 0, res.stdout
    assert job_counts(res.stdout)["loo_shard"] == 3 * len(LINEAR)
    shards = {o for j in dry_run_jobs(res.stdout) if j["rule"] == "loo_shard" for o in j["output"]}
    assert "results/random_small/loo/shards/3-of-3.pt" in shards


# ---------------------------------------------------------------------------- bad configs


def _set(cfg, path, value):
    node = cfg
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value


BAD_CONFIGS = [
    # (id, path to change, value, substrings the error must contain)
    ("wrong-type", ["experiments", "mnist_logreg", "top_k"], "many",
     ["experiments.mnist_logreg.top_k", "is not of type 'integer'"]),
    ("yaml-float-string", ["experiments", "mnist_logreg", "cg", "tol"], "1e-10",
     ["experiments.mnist_logreg.cg.tol", "is not of type 'number'"]),
    ("unknown-top-key", ["lo_shards"], 3, ["'lo_shards' was unexpected"]),
    ("unknown-nested-key", ["experiments", "mnist_logreg", "lissa", "scales"], 10.0,
     ["experiments.mnist_logreg.lissa", "'scales' was unexpected"]),
    ("test-index-out-of-range", ["experiments", "mnist_logreg", "test_indices"], [8, 10000],
     ["experiments.mnist_logreg.test_indices[1] = 10000 is outside the test set (n_test = 10000"]),
    ("top-k-exceeds-n", ["experiments", "mnist_logreg", "top_k"], 60000,
     ["experiments.mnist_logreg.top_k = 60000 exceeds n_train = 55000"]),
    ("top-k-exceeds-random-n", ["experiments", "random_small", "top_k"], 1001,
     ["experiments.random_small.top_k = 1001 exceeds n_train = 1000"]),
    ("random-test-index", ["experiments", "random_small", "test_indices"], [200],
     ["experiments.random_small.test_indices[0] = 200 is outside the test set (n_test = 200"]),
    ("negative-l2", ["experiments", "random_small", "l2"], -0.01,
     ["experiments.random_small.l2", "less than or equal to the minimum of 0"]),
    ("bad-enum", ["experiments", "mnist_logreg", "cg", "preconditioner"], "jacobi",
     ["experiments.mnist_logreg.cg.preconditioner", "'jacobi' is not one of"]),
    ("random-missing-n-train", ["experiments", "random_small", "dataset"],
     {"kind": "random", "n_features": 8, "n_classes": 2, "n_test": 10},
     ["experiments.random_small.dataset", "'n_train' is a required property"]),
    ("validation-too-large", ["experiments", "mnist_logreg", "dataset", "validation_size"], 60000,
     ["experiments.mnist_logreg.dataset.validation_size = 60000 leaves no training points"]),
    ("paper-figure-unknown", ["paper_figure", "linear"], "nope",
     ["paper_figure.linear = 'nope' is not an experiment"]),
    ("bad-experiment-name", ["experiments", "bad/name"], {"dataset": {"kind": "mnist"}},
     ["experiments", "'bad/name' does not match"]),
]


@pytest.mark.parametrize("path,value,expected", [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_is_rejected_naming_the_key(wf, path, value, expected):
    """The Snakefile's config check (common.smk's validate_config) run in this process."""
    cfg = copy.deepcopy(DEFAULT)
    _set(cfg, path, value)
    message = config_error(cfg, wf)
    assert message is not None
    for text in expected:
        assert text in message, f"{text!r} not in:\n{message}"


def test_default_config_passes_the_check(wf):
    assert config_error(DEFAULT, wf) is None
    assert config_error(TINY, wf) is None


def test_bad_config_message_reaches_the_user(wf):
    """One bad config through the CLI: snakemake stops before planning a job and prints the
    message the in-process check gives."""
    cfg = copy.deepcopy(DEFAULT)
    _set(cfg, ["experiments", "mnist_logreg", "top_k"], "many")
    write_yaml(wf / "config" / "bad.yaml", cfg)
    res = run_snakemake(wf, "-n", "--cores", "1", "--configfile", "config/bad.yaml")
    assert res.returncode != 0, res.stdout
    assert config_error(cfg, wf) in res.stdout, res.stdout
    assert "experiments.mnist_logreg.top_k" in res.stdout
    assert "Job stats" not in res.stdout  # stopped before planning any job


def test_configfile_replaces_default_experiments(wf):
    """--configfile must not be merged into config/config.yaml's experiments."""
    res = run_snakemake(wf, "-n", "--cores", "1", "--configfile", "config/tiny.yaml")
    assert res.returncode == 0, res.stdout
    outputs = " ".join(o for j in dry_run_jobs(res.stdout) for o in j["output"])
    assert "tiny_random" in outputs
    assert "mnist_logreg" not in outputs and "random_small" not in outputs


# -------------------------------------------------------------------------- wfio hooks


def test_fail_once_hook(tmp_path, monkeypatch):
    outputs = [str(tmp_path / "out" / "theta.pt")]
    monkeypatch.setenv("INFCORE_FAIL_ONCE", f"train:{tmp_path / 'markers'}")
    wfio.fail_once("select", outputs)  # other rule: no effect
    assert not (tmp_path / "markers").exists()
    with pytest.raises(SystemExit) as exc:
        wfio.fail_once("train", outputs)
    assert exc.value.code == 1
    assert (tmp_path / "markers" / ("train-" + outputs[0].replace("/", "__"))).exists()
    assert not (tmp_path / "out").exists()  # nothing written
    wfio.fail_once("train", outputs)  # second attempt runs


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.json"
    with pytest.raises(RuntimeError), wfio.atomic(target) as tmp:
        with open(tmp, "w") as f:
            f.write("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    wfio.save_json({"a": float("nan"), "b": (1, 2)}, target)
    assert json.loads(target.read_text()) == {"a": None, "b": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


# ---------------------------------------------------------------------- tiny end to end


@pytest.fixture(scope="module")
def tiny(tiny_run):
    """The session's tiny run (conftest.tiny_run): config/tiny.yaml's experiments and tiny_cnn
    end to end through the CLI, on fake MNIST files."""
    return tiny_run


def _summary(wd):
    with open(wd / "results" / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def _library_inputs(wd, name):
    """The objective and theta_hat of the workflow's run, from its dataset.pt and theta.pt."""
    import torch
    from infcore.objective import LogisticObjective

    ds = wfio.load_dataset(wd / "resources" / "datasets" / name / "dataset.pt")
    theta = wfio.load_torch(wd / "results" / name / "train" / "theta.pt")
    assert theta.dtype == torch.float64 and ds.X_train.dtype == torch.float64
    return LogisticObjective(ds.X_train, ds.y_train, ds.n_classes, LINEAR_TINY[name]["l2"]), theta, ds


def _library_predictions(wd, name, t):
    """The library's explicit solve on the workflow's own inputs (dataset.pt, theta.pt):
    ``(1/n) G (H + damping I)^-1 g_test`` for every training point."""
    from infcore.influence import predicted_loss_change
    from infcore.solvers import solve_explicit

    obj, theta, ds = _library_inputs(wd, name)
    g = obj.data_grad(theta, ds.X_test[t:t + 1], ds.y_test[t:t + 1])
    damping = (LINEAR_TINY[name].get("cg") or {}).get("damping", 0.0)
    s = solve_explicit(obj.hessian(theta), g, damping=damping)
    return obj, theta, ds, predicted_loss_change(obj, theta, s)


def test_tiny_run_cg_equals_the_explicit_solve(tiny):
    """The workflow's CG predictions (influence_cg/test_T.pt) equal the library's explicit
    solve on the same inputs to 1e-6 relative (CG stops at relative residual 1e-10; the
    damped Hessian's condition number here is < 1e4), so Pearson and slope against the
    certified LOO changes agree with the explicit solve's to 1e-5 (slope: within 1%, the
    issue's bound, with room)."""
    from infcore.metrics import pearson, slope

    rows = _summary(tiny)
    for name, exp in LINEAR_TINY.items():
        with open(tiny / "results" / name / "loo" / "loo.csv", newline="") as f:
            loo = list(csv.DictReader(f))
        for t in exp["test_indices"]:
            ours = wfio.load_torch(tiny / "results" / name / "influence_cg" / f"test_{t}.pt")
            *_, ref = _library_predictions(tiny, name, t)
            err = float((ours - ref).abs().max() / ref.abs().max())
            assert err <= 1e-6, (name, t, err)
            actual = {int(r["train_index"]): float(r["actual"]) for r in loo if int(r["test_index"]) == t}
            with open(tiny / "results" / name / "select" / f"test_{t}.csv", newline="") as f:
                idx = [int(r["train_index"]) for r in csv.DictReader(f)]
            assert len(idx) == exp["top_k"]
            a = [actual[i] for i in idx]
            r_ref, s_ref = pearson(ref[idx], a), slope(ref[idx], a)
            row = next(r for r in rows if r["experiment"] == name and int(r["test_index"]) == t
                       and r["method"] == "cg")
            assert abs(float(row["pearson"]) - r_ref) <= 1e-5, (row, r_ref)
            assert abs(float(row["slope"]) - s_ref) <= 0.01 * abs(s_ref), (row, s_ref)
            assert abs(float(row["slope"]) - s_ref) <= 1e-5 * abs(s_ref), (row, s_ref)


def test_tiny_run_lissa_equals_the_library(tiny):
    """The workflow's LiSSA predictions equal infcore.influence.inverse_hvp_lissa's at the same
    settings and seed on the same inputs (the same arithmetic: 1e-12 relative; the tiny
    settings are far from converged, so this, not the LOO agreement, is what can be checked)."""
    import torch
    from infcore.influence import inverse_hvp_lissa, predicted_loss_change

    for name, exp in LINEAR_TINY.items():
        lissa = {"repeats": 10, "batch_size": 1, "damping": 0.0, "seed": 17, **exp["lissa"]}
        for t in exp["test_indices"]:
            obj, theta, ds = _library_inputs(tiny, name)
            with open(tiny / "results" / name / "influence_lissa" / f"test_{t}.csv", newline="") as f:
                rows = list(csv.DictReader(f))
            idx = torch.tensor([int(r["train_index"]) for r in rows])
            ours = torch.tensor([float(r["predicted"]) for r in rows], dtype=torch.float64)
            g = obj.data_grad(theta, ds.X_test[t:t + 1], ds.y_test[t:t + 1])
            s = inverse_hvp_lissa(obj, theta, g, depth=lissa["depth"], scale=lissa["scale"],
                                  repeats=lissa["repeats"], batch_size=lissa["batch_size"],
                                  damping=lissa["damping"], seed=lissa["seed"]).x
            ref = predicted_loss_change(obj, theta, s, idx)
            assert float((ours - ref).abs().max() / ref.abs().max()) <= 1e-12, (name, t)


def test_tiny_run_summary_rows(tiny):
    rows = [r for r in _summary(tiny) if r["experiment"] in LINEAR_TINY]
    expected = {(e, t, m) for e, s in LINEAR_TINY.items() for t in s["test_indices"] for m in ("cg", "lissa")}
    assert {(r["experiment"], int(r["test_index"]), r["method"]) for r in rows} == expected
    for r in rows:
        assert int(r["n_points"]) == LINEAR_TINY[r["experiment"]]["top_k"]
    md = (tiny / "results" / "summary.md").read_text()
    assert "| tiny_random |" in md and "Linear (exact)" in md


def test_tiny_run_outputs(tiny):
    res = tiny / "results"
    pngs = [res / "figure2.png"] + [res / e / "figure.png" for e in LINEAR_TINY]
    pngs += [res / e / f"test_{t}" / "figure.png" for e, s in LINEAR_TINY.items() for t in s["test_indices"]]
    for png in pngs:
        data = png.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000, png
        assert png.with_suffix(".pdf").read_bytes()[:4] == b"%PDF", png
    fig2 = json.loads((res / "figure2.json").read_text())
    assert [p["panel"] for p in fig2["panels"]] == ["Linear (exact)", "Linear (approx)", "CNN"]
    assert fig2["panels"][0]["test_index"] == TINY["experiments"]["tiny_mnist"]["test_indices"][0]
    md = (res / "figure2.md").read_text()
    assert "Pearson R (paper)" in md and "| Linear (approx) |" in md
    # data from the torchvision path on the fake files; LOO certified; shards joined in order
    info = json.loads((tiny / "resources/datasets/tiny_mnist/dataset.json").read_text())
    assert info["n_train"] == 500 and info["n_test"] == 50 and info["canonical_files"] is False
    loo = json.loads((res / "tiny_mnist/loo/loo.json").read_text())
    assert loo["all_converged"] and loo["max_grad_maxnorm"] <= 1e-10 and loo["shards"] == TINY["loo_shards"]
    with open(res / "tiny_mnist/loo/loo.csv", newline="") as f:
        loo_rows = list(csv.DictReader(f))
    assert {int(r["test_index"]) for r in loo_rows} == set(TINY["experiments"]["tiny_mnist"]["test_indices"])
    cg = json.loads((res / "tiny_mnist/influence_cg/test_3.json").read_text())
    assert cg["converged"] and cg["final_residual"] <= 1e-10
    for log in ("logs/train/tiny_mnist.log", "logs/loo_shard/tiny_mnist/1-of-2.log",
                "logs/influence_lissa/tiny_mnist/test_3.log"):
        assert (tiny / log).stat().st_size > 0, log
    assert (tiny / "benchmarks/loo_shard/tiny_mnist/1-of-2.tsv").exists()


def test_tiny_run_marks_truncated_lissa(tiny):
    """tiny_mnist's LiSSA (L2 0.01, scale 25, depth 500) is far from converged: the JSON says
    so with the depth the L2 bound needs, the log warns, summary.md, figure2.md and the
    figure JSONs carry the note."""
    res = tiny / "results"
    note = "not converged: depth 500, needs ~11,511"  # 0.9996^11,511 <= 0.01
    check = json.loads((res / "tiny_mnist/influence_lissa/test_3.json").read_text())["convergence"]
    assert check["converged"] is False and check["depth_needed"] == 11511 and check["status"] == note
    assert check["lambda_min_bound"] == TINY["experiments"]["tiny_mnist"]["l2"]
    log = (tiny / "logs/influence_lissa/tiny_mnist/test_3.log").read_text()
    assert "WARNING" in log and "LiSSA at test point 3: depth 500 is below the ~11,511 steps" in log
    assert "| Linear (approx) | lissa |" in (res / "summary.md").read_text()
    for md in ("summary.md", "figure2.md"):
        text = (res / md).read_text()
        assert any("| Linear (approx) |" in line and note in line for line in text.splitlines()), md
        assert not any("| Linear (exact) |" in line and "not converged" in line for line in text.splitlines())
    panel = json.loads((res / "figure2.json").read_text())["panels"][1]
    assert panel["method"] == "lissa" and panel["note"] == note
    with open(res / "summary.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["experiment"] in LINEAR_TINY]
    assert {r["note"] for r in rows if r["method"] == "cg"} == {""}
    assert all(r["note"].startswith("not converged: depth 500, needs ~") for r in rows if r["method"] == "lissa")


def test_tiny_rerun_has_nothing_to_do(tiny):
    res = run_snakemake(tiny, "-n", "--cores", "2", "--configfile", SESSION_CONFIG)
    assert res.returncode == 0 and nothing_to_do(res.stdout), res.stdout


def dry_run_with(workdir, cfg):
    """Dry run of ``workdir`` under config ``cfg``: (result, jobs, their rule names)."""
    write_yaml(workdir / "config" / "changed.yaml", cfg)
    res = run_snakemake(workdir, "-n", "--cores", "2", "--configfile", "config/changed.yaml")
    assert res.returncode == 0, res.stdout
    jobs = dry_run_jobs(res.stdout)
    return res, jobs, {j["rule"] for j in jobs}


def test_changing_one_experiment_reruns_only_its_jobs(tiny):
    cfg = copy.deepcopy(SESSION)
    cfg["experiments"]["tiny_random"]["l2"] = 0.02
    res, jobs, rules = dry_run_with(tiny, cfg)
    assert {"train", "influence_cg", "select", "influence_lissa", "loo_shard", "loo_gather",
            "figure_point", "figure", "summary", "all"} <= rules
    assert "data" not in rules and "paper_figure" not in rules  # same data; figure 2 is tiny_mnist's
    assert "Params have changed" in res.stdout
    for j in jobs:
        if j["rule"] in ("summary", "all"):
            continue
        assert j["wildcards"].get("experiment") == "tiny_random", j
        assert all("tiny_random" in o for o in j["output"]), j

    cfg = copy.deepcopy(SESSION)
    cfg["experiments"]["tiny_mnist"]["top_k"] = 30
    res, jobs, rules = dry_run_with(tiny, cfg)
    assert {"select", "loo_shard", "paper_figure", "summary"} <= rules
    assert not rules & {"data", "train", "influence_cg"}
    assert not any("tiny_random" in o for j in jobs for o in j["output"])


# ------------------------------------------------------------------ bitwise repeatability

# JSON fields that hold wall-clock times (removed, with everything under them, before two runs'
# JSON files are compared). Every other output byte is compared.
TIMING_KEYS = {
    "seconds", "setup_seconds", "seconds_per_point", "predict_seconds", "eigenvalue_seconds",
    "train_seconds", "loo_seconds", "loo_seconds_per_point", "cg_seconds", "lissa_seconds",
    # CNN records (not in the tiny config)
    "hvp_seconds", "control_seconds", "seconds_per_step", "train_seconds_per_step", "influence_seconds",
}


def _without_timings(obj):
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def _outputs(wd, experiments, results=True):
    return sorted(str(p.relative_to(wd)) for e in experiments
                  for d in ((f"results/{e}",) if results else ()) + (f"resources/datasets/{e}",)
                  for p in (wd / d).rglob("*") if p.is_file())


def test_tiny_rerun_is_bitwise_identical(tiny, tmp_path):
    """tiny_random (every linear rule) and tiny_mnist's dataset again in a fresh copy on the
    same input files: every .pt, .csv, figure (PNG, PDF) and dataset file has the same bytes;
    JSON files are equal without the TIMING_KEYS fields; files named *timings* hold only
    wall-clock times. (tiny_mnist's later rules run the same code on 784 features, 1 minute
    more; the summary and Figure 2 need the CNN too: their timings table is checked on the
    session's run.)"""
    wd = copy_workflow(tmp_path / "again")
    shutil.copytree(tiny / "resources" / "mnist", wd / "resources" / "mnist")
    shutil.copy(tiny / SESSION_CONFIG, wd / SESSION_CONFIG)
    targets = ["results/tiny_random/figure.png", "resources/datasets/tiny_mnist/dataset.pt"]
    res = run_snakemake(wd, *targets, "--cores", "2", "--configfile", SESSION_CONFIG)
    assert res.returncode == 0, res.stdout[-6000:]
    files = _outputs(tiny, ["tiny_random"]) + _outputs(tiny, ["tiny_mnist"], results=False)
    assert files == _outputs(wd, ["tiny_random"]) + _outputs(wd, ["tiny_mnist"], results=False)
    assert "resources/datasets/tiny_mnist/dataset.pt" in files
    timing_files = [f for f in files if "timings" in f.rsplit("/", 1)[-1]]
    assert "results/tiny_random/loo/shards/1-of-2.timings.json" in timing_files
    kinds = {f.rsplit(".", 1)[-1] for f in files}
    assert {"pt", "csv", "png", "pdf", "json"} <= kinds
    differ = []
    for f in files:
        a, b = (tiny / f).read_bytes(), (wd / f).read_bytes()
        if f in timing_files or a == b:
            continue
        if f.endswith(".json") and _without_timings(json.loads(a)) == _without_timings(json.loads(b)):
            continue
        differ.append(f)
    assert differ == [], differ
    assert (tiny / "results" / "timings.csv").exists() and (tiny / "results" / "timings.md").exists()
    with open(tiny / "results" / "timings.csv", newline="") as fh:
        cols = next(csv.reader(fh))
    assert cols[:4] == ["experiment", "test_index", "panel", "method"]
    assert len(cols) == 8 and all("seconds" in c for c in cols[4:])
