"""A failed job is retried and the run completes with nothing lost.

The rule scripts honour ``INFCORE_FAIL_ONCE=<rule>:<marker_dir>`` (workflow/scripts/wfio.py):
the first attempt of that rule, per output, creates a marker and exits 1; a retry finds the
marker and runs. Here every LOO shard of the tiny random experiment (no MNIST needed) fails
once; with ``--retries 1`` the run completes and the LOO table holds every selected point,
identical to a run in which nothing failed: the session's tiny run (conftest.tiny_run),
copied with its upstream outputs so only the LOO jobs run again. (tests/test_slurm.py does
the same on SLURM.)
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
from workflow_utils import SESSION_CONFIG

TARGET = "results/tiny_random/loo/loo.csv"
pytestmark = pytest.mark.skipif(
    not (REPO / "config" / "tiny.yaml").exists() or not (REPO / "workflow" / "rules").is_dir(),
    reason="workflow or config/tiny.yaml not written yet",
)


def snakemake(wd: Path, *args: str, env: dict | None = None, timeout: int = 600):
    cmd = [sys.executable, "-m", "snakemake", "--configfile", SESSION_CONFIG, "--nocolor"]
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


def test_failed_job_is_retried(tiny_run, tmp_path):
    wd = tmp_path / "wf"
    shutil.copytree(tiny_run, wd, symlinks=True)

    # reference: the session's run, in which nothing failed
    reference = read_rows(tiny_run / TARGET)
    shutil.rmtree(wd / "results/tiny_random/loo")

    # every LOO shard fails on its first attempt; one retry each completes the run
    markers = tmp_path / "markers"
    fail = {"INFCORE_FAIL_ONCE": f"loo_shard:{markers}"}
    out = snakemake(wd, "--cores", "2", "--retries", "1", TARGET, env=fail)
    assert out.returncode == 0, out.stderr[-5000:]
    log = out.stdout + out.stderr
    assert "failing loo_shard once on purpose" in log
    assert "Error in rule loo_shard" in log
    failed_once = sorted(p.name for p in markers.iterdir())
    shards = sorted(p.name for p in (wd / "results/tiny_random/loo/shards").glob("*.pt"))
    assert len(failed_once) == len(shards) >= 2, (failed_once, shards)

    # nothing lost or changed: every selected point once, same numbers as the reference
    rows = read_rows(wd / TARGET)
    points = [int(r["train_index"]) for r in rows]
    assert sorted(points) == sorted(selected_points(wd)), "LOO rows lost or duplicated"
    assert rows == reference
