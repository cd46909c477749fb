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
