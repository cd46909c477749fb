"""The tiny config on a real one-node SLURM cluster, through profiles/slurm (slow).

Starts the cluster with .ci/slurm/start.sh (root; installs slurm-wlm and munge with apt
when missing), builds the tiny config's random experiment (``tiny_random``: every rule of
the linear pipeline, data to figure, without MNIST files) locally and through
``--workflow-profile profiles/slurm``, with the LOO shards failing once each
(INFCORE_FAIL_ONCE) so that the profile's retries are exercised on the cluster, and checks
that

* every non-local job went through sbatch (the plugin's logs under
  .snakemake/slurm_logs/, SLURM's own job records via ``scontrol``/``squeue``),
* the failed shard jobs were resubmitted and the run completed,
* the results are the same numbers as the local run's.

It stops the daemons it started (.ci/slurm/stop.sh); a cluster that was already up is left
alone. Skipped, with the reason, when not root, without apt-get, or when the cluster cannot
start, except under INFCORE_REQUIRE_SLURM=1 (CI), where that is a failure.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from script_imports import REPO
from workflow_utils import copy_workflow, write_fake_mnist

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (REPO / "config" / "tiny.yaml").exists(), reason="config/tiny.yaml not written yet"
    ),
]

START = REPO / ".ci" / "slurm" / "start.sh"
STOP = REPO / ".ci" / "slurm" / "stop.sh"
STATE = Path(os.environ.get("INFCORE_SLURM_STATE", "/var/tmp/infcore-slurm"))
REQUIRED = os.environ.get("INFCORE_REQUIRE_SLURM") == "1"
#: keys/columns that hold wall times, dates or machine facts, not results
VOLATILE = re.compile(r"second|time|_s$|date|host|python|version|path|elapsed", re.I)


def _unavailable(reason: str):
    if REQUIRED:
        pytest.fail(f"INFCORE_REQUIRE_SLURM=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _ours_running() -> bool:
    for d in ("slurmctld", "slurmd"):
        try:
            pid = int((STATE / f"{d}.pid").read_text().strip())
            if Path(f"/proc/{pid}/comm").read_text().strip() != d:
                return False
        except (OSError, ValueError):
            return False
    return True


@pytest.fixture(scope="module")
def slurm_cluster():
    if os.geteuid() != 0:
        _unavailable("not root: the test cluster's daemons need root")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        _unavailable("SLURM is not installed and there is no apt-get to install it")
    was_running = _ours_running()
    try:
        out = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        _unavailable(".ci/slurm/start.sh did not finish in 900 s")
    if out.returncode != 0:
        _unavailable(f".ci/slurm/start.sh failed ({out.returncode}):\n{out.stderr[-3000:]}")
    started = not was_running
    try:
        yield
    finally:
        if started:
            subprocess.run(["bash", str(STOP)], capture_output=True, timeout=120)


EXPERIMENT = "tiny_random"
TARGETS = [f"results/{EXPERIMENT}/figure.{ext}" for ext in ("png", "csv", "json")]


def _tiny_workdir(path: Path) -> Path:
    """A copy of the workflow with small fake MNIST files (the tiny config's mnist_root)."""
    wd = copy_workflow(path)
    write_fake_mnist(wd)
    return wd


def _run(wd: Path, args: list[str], env: dict | None = None, timeout=900):
    cmd = [sys.executable, "-m", "snakemake", "--configfile", "config/tiny.yaml", "--nocolor"]
    full_env = {k: v for k, v in os.environ.items() if k != "INFCORE_FAIL_ONCE"}
    full_env.update(env or {})
    t0 = time.perf_counter()
    out = subprocess.run(
        [*cmd, *args], cwd=wd, capture_output=True, text=True, env=full_env, timeout=timeout
    )
    return out, time.perf_counter() - t0


def _numbers(path: Path):
    """A result file's content without wall times (CSV rows or JSON), for comparison."""
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            return [
                {k: v for k, v in row.items() if not VOLATILE.search(k)}
                for row in csv.DictReader(f)
            ]

    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if not VOLATILE.search(str(k))}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        if isinstance(obj, float) and math.isnan(obj):
            return "nan"
        return obj

    return strip(json.loads(path.read_text()))


def _result_files(wd: Path) -> list[Path]:
    return sorted(
        p.relative_to(wd)
        for p in (wd / "results").rglob("*")
        if p.suffix in (".csv", ".json") and p.is_file()
    )


def test_tiny_config_on_slurm_equals_local(slurm_cluster, tmp_path):
    # local reference
    local = _tiny_workdir(tmp_path / "local")
    out, local_s = _run(local, ["--cores", "2", *TARGETS])
    assert out.returncode == 0, out.stderr[-5000:]

    # the same through the SLURM profile, LOO shards failing once each
    wd = _tiny_workdir(tmp_path / "slurm")
    markers = tmp_path / "markers"
    args = [
        "--workflow-profile",
        str(REPO / "profiles" / "slurm"),
        "--slurm-no-account",
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--slurm-keep-successful-logs",
        "--max-threads",  # one CPU per job: two jobs at once on the 2-CPU test node
        "1",
        "--latency-wait",
        "5",
        *TARGETS,
    ]
    out, slurm_s = _run(wd, args, env={"INFCORE_FAIL_ONCE": f"loo_shard:{markers}"})
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-6000:]
    print(f"\n{EXPERIMENT}: local {local_s:.0f} s, SLURM {slurm_s:.0f} s")

    # every non-local job was an sbatch job: the plugin says so, SLURM has the record
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", log)
    assert submitted, "no job was submitted to SLURM"
    states = {}
    for line in subprocess.run(
        ["squeue", "--states=all", "-h", "-o", "%i|%T"], capture_output=True, text=True
    ).stdout.splitlines():
        jid, _, state = line.strip().partition("|")
        states[jid] = state
    for jid in submitted:
        if jid not in states:  # squeue may have dropped it; scontrol still knows
            rec = subprocess.run(
                ["scontrol", "show", "job", jid], capture_output=True, text=True
            ).stdout
            m = re.search(r"JobState=(\w+)", rec)
            states[jid] = m.group(1) if m else "UNKNOWN"
    seen = [states[j] for j in submitted]
    assert set(seen) <= {"COMPLETED", "FAILED"}, dict(zip(submitted, seen, strict=True))
    rule_dirs = {p.name for p in (wd / ".snakemake" / "slurm_logs").iterdir()}
    for rule in ("data", "train", "influence_cg", "influence_lissa", "loo_shard"):
        assert f"rule_{rule}" in rule_dirs, (rule, sorted(rule_dirs))

    # the injected failures were real SLURM job failures, and were retried
    failed_shards = sorted(p.name for p in markers.iterdir())
    assert failed_shards, "no LOO shard failed: INFCORE_FAIL_ONCE had no effect"
    assert seen.count("FAILED") == len(failed_shards), (seen, failed_shards)
    shard_files = sorted((wd / "results" / EXPERIMENT / "loo" / "shards").glob("*.pt"))
    assert len(shard_files) == len(failed_shards) >= 2, (shard_files, failed_shards)

    # same numbers as the local run
    files = _result_files(local)
    assert files and files == _result_files(wd), "different result files"
    different = [str(f) for f in files if _numbers(local / f) != _numbers(wd / f)]
    assert not different, f"SLURM results differ from the local run's: {different}"
