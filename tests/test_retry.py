"""A failed job is retried and the run completes with nothing lost.

The rule scripts honour ``INFCORE_FAIL_ONCE=<rule>:<marker_dir>`` (workflow/scripts/wfio.py):
the first attempt of that rule, per output, creates a marker and exits 1; a retry finds the
marker and runs. Here the LOO shards of the tiny random experiment (no MNIST needed) fail
once each: without retries the run fails; with ``--retries 1`` it completes and the LOO
table holds every selected point, identical to a run in which nothing failed.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from script_imports import REPO

TARGET = "results/tiny_random/loo/loo.csv"
pytestmark = pytest.mark.skipif(
    not (REPO / "config" / "tiny.yaml").exists() or not (REPO / "workflow" / "rules").is_dir(),
    reason="workflow or config/tiny.yaml not written yet",
)


def copy_workflow(dst: Path) -> Path:
    """The workflow's own files (no results, logs or caches) in ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".snakemake")
    for name in ("Snakefile", "config", "envs", "profiles", "workflow"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dst / name)
    return dst


def snakemake(wd: Path, *args: str, env: dict | None = None, timeout: int = 600):
    cmd = [sys.executable, "-m", "snakemake", "--configfile", "config/tiny.yaml", "--nocolor"]
    full_env = {k: v for k, v in os.environ.items() if k != "INFCORE_FAIL_ONCE"}
    full_env.update(env or {})
    return subprocess.run(
        [*cmd, *args], cwd=wd, capture_output=True, text=True, env=full_env, timeout=timeout
    )


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def selected_points(wd: Path) -> set[int]:
    sel = sorted((wd / "results" / "tiny_random" / "select").glob("test_*.csv"))
    assert sel, "no selection files"
    return {int(r["train_index"]) for p in sel for r in read_rows(p)}


def test_failed_job_is_retried(tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    markers = tmp_path / "markers"
    fail = {"INFCORE_FAIL_ONCE": f"loo_shard:{markers}"}

    # 1. without retries the injected failure stops the run (so the hook is real) ...
    out = snakemake(wd, "--cores", "2", "--retries", "0", TARGET, env=fail)
    assert out.returncode != 0, "INFCORE_FAIL_ONCE did not make loo_shard fail"
    assert "failing loo_shard once on purpose" in out.stderr + out.stdout
    assert not (wd / TARGET).exists()

    # 2. ... and with one retry, the same run (fresh markers) completes
    shutil.rmtree(markers)
    out = snakemake(wd, "--cores", "2", "--retries", "1", TARGET, env=fail)
    assert out.returncode == 0, out.stderr[-5000:]
    failed_once = sorted(p.name for p in markers.iterdir())
    shards = sorted(p.name for p in (wd / "results/tiny_random/loo/shards").glob("*.pt"))
    assert len(failed_once) == len(shards) >= 2, (failed_once, shards)
    assert "Error in rule loo_shard" in out.stderr
    rows = read_rows(wd / TARGET)
    points = {int(r["train_index"]) for r in rows}
    assert points == selected_points(wd), "LOO rows lost or duplicated after the retry"
    assert len(rows) == len(points)

    # 3. nothing lost or changed: identical to a run in which nothing failed
    clean = copy_workflow(tmp_path / "clean")
    for d in ("resources", "results"):
        shutil.copytree(wd / d, clean / d)
    shutil.rmtree(clean / "results/tiny_random/loo")
    out = snakemake(clean, "--cores", "2", TARGET)
    assert out.returncode == 0, out.stderr[-5000:]
    assert read_rows(clean / TARGET) == rows
