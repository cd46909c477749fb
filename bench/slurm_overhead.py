"""Per-job overhead of running rules as SLURM jobs through profiles/slurm.

Needs a reachable SLURM cluster (`sinfo` works); `--start-cluster` starts the one-node test
cluster with .ci/slurm/start.sh (root) and stops it afterwards.

What it measures, in one run:

1. raw SLURM: `sbatch --wrap true`, submit -> running -> completed (squeue polled every
   0.1 s), one job at a time;
2. a trivial `script:` rule (writes a timestamp) submitted through the repo's
   profiles/slurm with the executor plugin, `--jobs` at a time: queue wait (submit ->
   RUNNING), time RUNNING (the jobstep: `python -m snakemake` starting in the allocation,
   srun, the script), and Snakemake's wall time;
3. the same workflow run locally (`--cores`), for the baseline.

The per-job overhead that a shard pays on the node is queue wait + time RUNNING of the
trivial job; the status-polling delay (`slurm-init-seconds-before-status-checks`, backing
off by 10 s per idle check) is paid once per stage on the critical path, not per shard.
Given the per-point LOO cost (`--loo-seconds-per-point`, and the per-shard setup
`--loo-setup-seconds`: load data, factor the Hessian), it prints the smallest shard that
keeps overhead under 10% of the job's time.

    python bench/slurm_overhead.py --start-cluster --jobs 8 --json bench-slurm.json
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TOY_SNAKEFILE = """
N = int(config.get("count", 4))

rule all:
    input: expand("out/{i}.txt", i=range(N))

rule noop:
    output: "out/{i}.txt"
    log: "logs/noop/{i}.log"
    resources: runtime=5, mem_mb=200, cpus_per_task=1
    script: "noop.py"
"""

TOY_SCRIPT = """
import os, time
with open(snakemake.output[0], "w") as f:
    f.write(f"{time.time()} {os.environ.get('SLURM_JOB_ID', '-')}\\n")
"""


class SqueuePoller(threading.Thread):
    """Polls `squeue --states=all` and records when each job was first seen in a state."""

    def __init__(self, interval: float = 0.1):
        super().__init__(daemon=True)
        self.interval = interval
        self.seen: dict[str, dict[str, float]] = {}
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            now = time.time()
            out = subprocess.run(
                ["squeue", "--states=all", "-h", "-o", "%i|%T"], capture_output=True, text=True
            ).stdout
            for line in out.splitlines():
                if "|" not in line:
                    continue
                jid, state = line.strip().split("|", 1)
                rec = self.seen.setdefault(jid, {"first": now})
                rec.setdefault(state, now)
            self._stop_event.wait(self.interval)

    def stop(self):
        self._stop_event.set()
        self.join()


def phases(rec: dict[str, float]) -> tuple[float, float] | None:
    """(queue wait, time running) from one job's first-seen times, or None if unknown."""
    start = rec.get("RUNNING", rec.get("COMPLETING", rec.get("COMPLETED")))
    end = rec.get("COMPLETED") or rec.get("COMPLETING")
    if start is None or end is None:
        return None
    return start - rec["first"], end - start


def raw_sbatch(n: int, poller: SqueuePoller) -> list[float]:
    """Submit `true` n times one after another; return submit -> completed seconds."""
    totals = []
    for _ in range(n):
        t0 = time.time()
        jid = subprocess.run(
            ["sbatch", "--parsable", "--wrap", "true", "-o", "/dev/null"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        jid = jid.split(";")[0]
        while "COMPLETED" not in poller.seen.get(jid, {}):
            if time.time() - t0 > 120:
                raise RuntimeError(f"job {jid} did not complete in 120 s")
            time.sleep(0.05)
        totals.append(poller.seen[jid]["COMPLETED"] - t0)
    return totals


def run_toy(workdir: Path, n: int, jobs: int, slurm: bool, extra: list[str]) -> tuple[float, str]:
    shutil.rmtree(workdir / "out", ignore_errors=True)
    shutil.rmtree(workdir / ".snakemake", ignore_errors=True)
    cmd = [sys.executable, "-m", "snakemake", "--config", f"count={n}", "--nocolor"]
    if slurm:
        cmd += [
            "--workflow-profile",
            str(REPO / "profiles" / "slurm"),
            "--jobs",
            str(jobs),
            "--slurm-no-account",
            "--slurm-status-command",
            "squeue",
            *extra,
        ]
    else:
        cmd += ["--workflow-profile", "none", "--cores", str(jobs)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-4000:]}")
    return wall, out.stderr


def summary(xs: list[float]) -> dict:
    return {
        "n": len(xs),
        "mean": statistics.fmean(xs) if xs else float("nan"),
        "median": statistics.median(xs) if xs else float("nan"),
        "max": max(xs) if xs else float("nan"),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--jobs", type=int, default=8, help="trivial jobs through the profile")
    ap.add_argument("--raw", type=int, default=5, help="raw `sbatch --wrap true` jobs")
    ap.add_argument("--start-cluster", action="store_true", help="start/stop .ci/slurm")
    ap.add_argument(
        "--status-interval",
        type=int,
        default=None,
        help="override slurm-init-seconds-before-status-checks (default: the profile's)",
    )
    ap.add_argument("--loo-seconds-per-point", type=float, default=None)
    ap.add_argument("--loo-setup-seconds", type=float, default=0.0)
    ap.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = ap.parse_args(argv)

    started = False
    if shutil.which("sinfo") is None or subprocess.run(["sinfo"], capture_output=True).returncode:
        if not args.start_cluster:
            print("no SLURM cluster reachable (run with --start-cluster as root)", file=sys.stderr)
            return 2
        subprocess.run(["bash", str(REPO / ".ci" / "slurm" / "start.sh")], check=True)
        started = True
    elif args.start_cluster:
        subprocess.run(["bash", str(REPO / ".ci" / "slurm" / "start.sh")], check=True)

    cpus = subprocess.run(["sinfo", "-h", "-o", "%C"], capture_output=True, text=True).stdout
    poller = SqueuePoller()
    poller.start()
    res: dict = {"cluster_cpus_A/I/O/T": cpus.strip()}
    try:
        if args.raw:
            res["raw_sbatch_submit_to_done_s"] = summary(raw_sbatch(args.raw, poller))

        with tempfile.TemporaryDirectory(prefix="slurm-bench-") as tmp:
            wd = Path(tmp)
            (wd / "Snakefile").write_text(TOY_SNAKEFILE)
            (wd / "noop.py").write_text(TOY_SCRIPT)
            extra = []
            if args.status_interval is not None:
                extra = ["--slurm-init-seconds-before-status-checks", str(args.status_interval)]
            local_wall, _ = run_toy(wd, args.jobs, 2, slurm=False, extra=[])
            before = set(poller.seen)
            slurm_wall, log = run_toy(wd, args.jobs, args.jobs, slurm=True, extra=extra)
            time.sleep(0.5)
            ids = re.findall(r"submitted with SLURM jobid (\d+)", log)
            recs = [poller.seen.get(i) for i in ids if i not in before]
            ph = [p for p in (phases(r) for r in recs if r) if p]
            res["toy_jobs"] = len(ids)
            res["queue_wait_s"] = summary([p[0] for p in ph])
            res["running_s"] = summary([p[1] for p in ph])
            per_job = [p[0] + p[1] for p in ph]
            res["per_job_overhead_s"] = summary(per_job)
            res["snakemake_wall_local_s"] = local_wall
            res["snakemake_wall_slurm_s"] = slurm_wall
            res["snakemake_wall_slurm_minus_local_s"] = slurm_wall - local_wall
    finally:
        poller.stop()
        if started:
            subprocess.run(["bash", str(REPO / ".ci" / "slurm" / "stop.sh")])

    overhead = res["per_job_overhead_s"]["mean"]
    if args.raw:
        print(f"raw sbatch submit->done:   {res['raw_sbatch_submit_to_done_s']['mean']:.2f} s/job")
    print(f"queue wait (profile jobs): {res['queue_wait_s']['mean']:.2f} s/job")
    print(f"jobstep running (trivial): {res['running_s']['mean']:.2f} s/job")
    print(
        f"per-job overhead on node:  {overhead:.2f} s (max {res['per_job_overhead_s']['max']:.2f})"
    )
    print(
        f"{res['toy_jobs']} trivial jobs, snakemake wall: local {res['snakemake_wall_local_s']:.1f} s,"
        f" slurm {res['snakemake_wall_slurm_s']:.1f} s"
    )
    if args.loo_seconds_per_point:
        c, s = args.loo_seconds_per_point, args.loo_setup_seconds
        # job time = O + s + m c; job-start overhead share O / (O + s + m c) <= 0.1
        #   <=>  m >= (9 O - s) / c
        m = max(0.0, (9 * overhead - s) / c)
        res["loo_min_points_per_shard"] = m
        print(
            f"LOO: {c * 1e3:.0f} ms/point, {s:.1f} s script setup per shard, {overhead:.1f} s"
            f" job start -> >= {m:.0f} points per shard keep job start < 10% of job time"
        )
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
