"""bench/gpu_check.sh and the one-GPU setup, on the CPU: the no-CUDA exit, the script's
CPU-side parts at a tiny size (--device cpu --tiny), the GPU profile, the config's engine
check and the mnist_cnn stream default."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch
import yaml
from infcore.config import ConfigError, check_config
from workflow_utils import REPO, copy_workflow, job_counts, run_snakemake, write_yaml

DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
SCHEMA = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")
def test_gpu_check_without_cuda_exits_at_once_with_a_message():
    res = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh")], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "no CUDA device visible" in res.stderr and "nothing was run" in res.stderr
    assert res.stdout == ""


def test_gpu_check_cpu_tiny_runs_every_part_but_the_capture(tmp_path):
    out = tmp_path / "check.json"
    res = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--device", "cpu",
                          "--tiny", "--threads", "1", "--json", str(out)], capture_output=True, text=True,
                         timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    rec = json.loads(out.read_text())
    assert rec["ok"] and rec["tiny"] and rec["device"] == "cpu"
    checks = {(r["check"].split(" ")[0], r["dtype"]): r for r in rec["agreement"]}
    assert set(checks) == {(c, d) for c in ("forward", "HVP", "retrain")
                           for d in ("float64", "float32")}
    for (_, dtype), r in checks.items():
        assert r["rel"] <= (1e-10 if dtype == "float64" else 1e-4)
        assert r["scale"] > 0
    # grouped (target) vs loop (reference) forward: rounding differs, so the check is real
    assert 0 < checks[("forward", "float32")]["max_abs"] < 1e-5
    t = rec["step_timings"]
    assert t["m"] == 3 and set(t["train"]) == {"eager", "blocks"}
    for e in ("eager", "blocks"):
        assert t["train"][e]["step_s"] >= 0 and t["loo"]["independent"][e]["wall_s"][1] > 0
    inf = rec["influence_timings"]
    p = rec["projected_seconds"]["blocks/independent"]
    assert p["train"] == pytest.approx(500_000 * t["train"]["blocks"]["step_s"])
    assert p["loo_and_control"] == pytest.approx(30_000 * t["loo"]["independent"]["blocks"]["step_s"])
    assert p["influence"] == pytest.approx(100 * inf["hvp_s"] + inf["jvp_all_s"])
    assert p["total"] == pytest.approx(p["train"] + p["loo_and_control"] + p["influence"])
    assert "a projection, not a run" in res.stdout


def test_mnist_cnn_retrains_with_independent_streams_by_default():
    assert DEFAULT["experiments"]["mnist_cnn"]["cnn"]["loo"]["streams"] == "independent"
    loo = SCHEMA["$defs"]["cnn"]["properties"]["loo"]["properties"]["streams"]
    assert loo["default"] == "independent" and set(loo["enum"]) == {"shared", "independent"}


def test_graph_engine_needs_cuda_in_the_config():
    cfg = copy.deepcopy(DEFAULT)
    cfg["experiments"]["mnist_cnn"]["cnn"]["engine"] = "graph"
    with pytest.raises(ConfigError, match=r"experiments\.mnist_cnn\.cnn\.engine = 'graph'"):
        check_config(cfg)
    check_config({**cfg, "cnn_device": "cuda"})  # the top-level override makes it valid
    cfg["experiments"]["mnist_cnn"]["cnn"]["device"] = "cuda"
    check_config(cfg)


def test_gpu_profile_runs_the_cnn_on_cuda_in_one_shard(tmp_path):
    """profiles/gpu: one cnn_loo shard, and cnn_device=cuda applied (a config whose engine
    'graph' needs CUDA passes the config check only through the profile)."""
    wd = copy_workflow(tmp_path / "wf")
    cfg = copy.deepcopy(DEFAULT)
    cfg["experiments"]["mnist_cnn"]["cnn"]["engine"] = "graph"
    write_yaml(wd / "config" / "graph.yaml", cfg)
    args = ("-n", "fig2_cnn", "--configfile", "config/graph.yaml")
    res = run_snakemake(wd, *args, "--workflow-profile", "profiles/gpu")
    assert res.returncode == 0, res.stdout[-4000:]
    counts = job_counts(res.stdout)
    assert counts["cnn_loo_shard"] == 1 and counts["cnn_control"] == 1
    res = run_snakemake(wd, *args)
    assert res.returncode != 0 and "needs CUDA" in res.stdout
