"""Helpers for the workflow tests: copy the workflow into a scratch folder, run the real
``snakemake`` CLI there, and read its dry-run job list."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_PARTS = ("Snakefile", "workflow", "config", "profiles", "envs")


def copy_workflow(dst: Path) -> Path:
    """Copy what the workflow needs (Snakefile, rules, scripts, config, profiles, envs)."""
    dst.mkdir(parents=True, exist_ok=True)
    for part in WORKFLOW_PARTS:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, dst / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            shutil.copy2(src, dst / part)
    return dst


def snakemake_cmd() -> list[str]:
    exe = shutil.which("snakemake")
    return [exe] if exe else [sys.executable, "-m", "snakemake"]


def run_snakemake(workdir: Path, *args: str, timeout: float = 900, env: dict | None = None
                  ) -> subprocess.CompletedProcess:
    """Run ``snakemake *args`` in ``workdir``; stdout and stderr together in ``.stdout``."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(snakemake_cmd() + list(args), cwd=workdir, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout, env=full_env)


def load_yaml(path: Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def write_yaml(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    return path


def write_fake_mnist(workdir: Path, n_train: int = 600, n_test: int = 100, image_size: int = 10,
                     root: str = "resources/mnist") -> list[Path]:
    """Small MNIST-format .gz files where the workflow's torchvision root expects them."""
    from fake_mnist import write_fake_mnist as write

    return write(workdir / root, n_train=n_train, n_test=n_test, seed=0, image_size=image_size)


_JOB_START = re.compile(r"^(?:local)?rule (\w+):\s*$")


def dry_run_jobs(output: str) -> list[dict]:
    """Jobs of a ``snakemake -n`` output: rule, output files and wildcards of each job."""
    jobs, cur = [], None
    for line in output.splitlines():
        m = _JOB_START.match(line)
        if m:
            cur = {"rule": m.group(1), "output": [], "wildcards": {}}
            jobs.append(cur)
            continue
        if cur is None:
            continue
        s = line.strip()
        if s.startswith("output:"):
            cur["output"] = [p.strip() for p in s[len("output:"):].split(",") if p.strip()]
        elif s.startswith("wildcards:"):
            for kv in s[len("wildcards:"):].split(","):
                k, _, v = kv.strip().partition("=")
                cur["wildcards"][k] = v
        elif not line.startswith(" ") and s:
            cur = None
    return jobs


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: rule -> count."""
    counts, in_table = {}, False
    for line in output.splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        if in_table:
            parts = line.split()
            if not parts or parts[0].startswith("-"):
                continue
            if parts[0] == "total":
                break
            counts[parts[0]] = int(parts[1])
    return counts


def nothing_to_do(output: str) -> bool:
    return "Nothing to be done" in output


def _validate_config_fn():
    """``validate_config`` of workflow/rules/common.smk, taken from its source and run here:
    the schema validation (filling defaults) and ``infcore.config.check_config``, raising the
    ``WorkflowError`` whose message the CLI prints."""
    import jsonschema
    from infcore.config import ConfigError, check_config
    from infcore.mnist import MnistFileError, mnist_counts
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    src = (REPO / "workflow" / "rules" / "common.smk").read_text()
    m = re.search(r"^def validate_config\(cfg\):\n(?:(?: .*)?\n)+", src, re.M)
    assert m, "validate_config not found in workflow/rules/common.smk"
    rules = REPO / "workflow" / "rules"

    def validate_here(cfg, schema):  # common.smk's path is relative to the rule file
        return validate(cfg, str((rules / schema).resolve()))

    ns = {"jsonschema": jsonschema, "WorkflowError": WorkflowError, "validate": validate_here,
          "check_config": check_config, "ConfigError": ConfigError, "MnistFileError": MnistFileError,
          "mnist_counts": mnist_counts}
    exec(compile(m.group(0), str(rules / "common.smk"), "exec"), ns)
    return ns["validate_config"], WorkflowError


def config_error(cfg: dict, workdir: Path) -> str | None:
    """The message ``snakemake`` would stop with for config ``cfg`` (None: the config is
    valid), checked in this process as the Snakefile checks it, with ``workdir`` as the
    working directory (``mnist_root`` is relative to it)."""
    import copy

    validate_config, WorkflowError = _validate_config_fn()
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        validate_config(copy.deepcopy(cfg))
    except WorkflowError as err:
        return str(err)
    finally:
        os.chdir(cwd)
    return None


# -------------------------------------------------------------- the session's tiny run
# The tiny CNN experiment (Figure 2's 'CNN' panel) cut down to seconds: fake 28x28 MNIST (600
# train images, 100 held out, all 500 others kept), width 4, 60 steps; two test points, 6
# points x 20 LOO steps.
TINY_CNN_EXPERIMENT = {
    "dataset": {"kind": "mnist", "validation_size": 100, "fraction": 1.0, "subset_seed": 0},
    "model": "cnn", "l2": 0.001, "test_indices": [3, 7], "top_k": 6,
    "cnn": {
        "device": "cpu", "width": 4,
        "train": {"steps": 60, "batch_size": 100, "lr": 3.0e-3, "decay_steps": [40],
                  "decay_factors": [0.3], "seed": 0, "init_seed": 0, "log_every": 20},
        "influence": {"damping": 0.01, "hvp_batch_size": 250, "tol": 1.0e-6, "maxiter": 8},
        "loo": {"steps": 20, "lr": None, "seed": 1, "chunk": 3, "streams": "shared"},
    },
}
SESSION_CONFIG = "config/session.yaml"


def session_config() -> dict:
    """config/tiny.yaml (the linear experiments tiny_mnist, tiny_random) plus tiny_cnn, so
    that one run feeds every end-to-end test and Figure 2 gets all three panels."""
    import copy

    cfg = load_yaml(REPO / "config" / "tiny.yaml")
    cfg["run_cnn"] = True
    cfg["cnn_loo_shards"] = 2
    cfg["paper_figure"] = {**cfg["paper_figure"], "cnn": "tiny_cnn"}
    cfg["experiments"]["tiny_cnn"] = copy.deepcopy(TINY_CNN_EXPERIMENT)
    return cfg


def make_tiny_run(wd: Path) -> Path:
    """The session config run end to end through the CLI in ``wd``, on fake 28x28 MNIST files
    (the CNN needs 28x28; about 100 s on 2 cores)."""
    copy_workflow(wd)
    write_fake_mnist(wd, n_train=600, n_test=100, image_size=28)
    write_yaml(wd / SESSION_CONFIG, session_config())
    res = run_snakemake(wd, "--cores", "2", "--configfile", SESSION_CONFIG)
    assert res.returncode == 0, res.stdout[-8000:]
    return wd
