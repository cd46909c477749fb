"""profiles/slurm: valid for Snakemake and the SLURM plugin, resources for the real rules."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from script_imports import REPO, parse_rules

PROFILE = REPO / "profiles" / "slurm" / "profile.yaml"
RULES = parse_rules()
#: every rule defined in a rule file, included or not (cnn.smk may not be included yet)
DEFINED = {
    m.group(1)
    for f in [REPO / "Snakefile", *(REPO / "workflow" / "rules").glob("*.smk")]
    if f.exists()
    for m in re.finditer(r"^\s*(?:local)?(?:rule|checkpoint)\s+(\w+)\s*:", f.read_text(), re.M)
}
CNN_GPU_RULES = ("cnn_train", "cnn_influence", "cnn_loo_shard")


def profile() -> dict:
    return yaml.safe_load(PROFILE.read_text())


def test_profile_basics():
    p = profile()
    assert p["executor"] == "slurm"
    assert int(p["jobs"]) >= 1
    assert int(p["retries"]) >= 1, "a failed cluster job must be retried"
    assert int(p["latency-wait"]) >= 10, "shared file systems need a latency wait"
    dr = p["default-resources"]
    assert {"runtime", "mem_mb", "cpus_per_task"} <= set(dr)


def test_set_resources_name_real_rules():
    """A typo in a rule name would silently drop its resources: every name must be a rule
    of the workflow (or of a rule file the workflow may include, e.g. cnn.smk)."""
    p = profile()
    for section in ("set-resources", "set-threads"):
        unknown = set(p.get(section) or {}) - DEFINED - set(CNN_GPU_RULES) - {"cnn_control"}
        assert not unknown, f"{section} names rules that do not exist: {sorted(unknown)}"


@pytest.mark.skipif(not RULES, reason="workflow rules not written yet")
def test_heavy_rules_have_runtime():
    """Rules that benchmark themselves (the heavy ones) get a runtime; the rest use the
    default."""
    p = profile()
    heavy = {
        r
        for r, rule in RULES.items()
        if re.search(r"^\s+benchmark:", rule.body, re.M) and r != "mnist_download"
    }
    missing = {r for r in heavy if "runtime" not in (p["set-resources"].get(r) or {})}
    assert not missing, f"no runtime in profiles/slurm for {sorted(missing)}"


def test_cnn_rules_request_a_gpu():
    res = profile()["set-resources"]
    for rule in CNN_GPU_RULES:
        assert int(res[rule]["gpu"]) >= 1, rule


def _eval_resources(value, attempt=1, threads=4):
    return eval(str(value), {"attempt": attempt, "threads": threads})  # noqa: S307


def test_resources_grow_with_attempt():
    p = profile()
    for rule, res in {"default": p["default-resources"], **p["set-resources"]}.items():
        for key in ("runtime", "mem_mb"):
            if key in res:
                one, two = _eval_resources(res[key], 1), _eval_resources(res[key], 2)
                assert 0 < one < two, f"{rule}.{key} = {res[key]!r} does not grow on retry"
    assert _eval_resources(p["default-resources"]["cpus_per_task"], threads=3) == 3


@pytest.mark.skipif(not (REPO / "Snakefile").exists(), reason="workflow not written yet")
def test_snakemake_accepts_profile(tmp_path):
    """A dry run of the tiny config through the SLURM profile: Snakemake and the plugin
    parse every key (including set-resources of rules the workflow does not define). No
    cluster is needed for a dry run."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--dry-run",
        "--quiet",
        "rules",
        "--workflow-profile",
        str(PROFILE.parent),
        "--configfile",
        "config/tiny.yaml",
        "--slurm-no-account",
        "--directory",
        str(tmp_path),
        "--snakefile",
        str(REPO / "Snakefile"),
    ]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert "Using workflow specific profile" in out.stdout + out.stderr
    assert not (tmp_path / "results").exists()


def test_docs_name_the_three_ways():
    text = (REPO / "docs" / "running.md").read_text()
    for cmd in ("snakemake --cores", "--sdm conda", "--workflow-profile profiles/slurm"):
        assert cmd in text, cmd
    assert Path(REPO / "bench" / "slurm_overhead.py").exists()
