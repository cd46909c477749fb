"""The conda environments in envs/ name what the rules' scripts import, with versions that
satisfy requirements.txt.

There is no conda on the test machines, so the environments are never built here; this
checks them statically. Rules, their ``conda:`` and ``script:`` are parsed from the workflow
files (cross-checked against ``snakemake --list-rules``); imports are read from the
scripts with ``ast`` (see tests/script_imports.py).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
from importlib import metadata

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from script_imports import (
    REPO,
    distributions_for,
    env_provides,
    parse_env,
    parse_rules,
    pinned_version,
    pypi_name,
    read_requirements,
    third_party_imports,
)

ENV_DIR = REPO / "envs"
ENV_FILES = sorted(ENV_DIR.glob("*.yaml"))
RULES = parse_rules()
SCRIPT_RULES = sorted(r for r, rule in RULES.items() if rule.script is not None)
#: rules that run something (and so need a software environment); `all`-style target
#: rules have only input:.
WORK_RULES = sorted(r for r, rule in RULES.items() if rule.script or rule.has_shell or rule.has_run)
no_workflow = pytest.mark.skipif(not RULES, reason="workflow rules not written yet")


def test_env_files_exist():
    names = {p.name for p in ENV_FILES}
    assert {"torch.yaml", "plot.yaml"} <= names, names


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_file_is_pinned_conda_forge(env_file):
    env = parse_env(env_file)
    assert env.channels and env.channels[0] == "conda-forge", env.channels
    assert "defaults" not in env.channels, "use conda-forge (with nodefaults), not defaults"
    assert "python" in env.packages, "pin python: scripts unpickle Snakemake's objects"
    for name, (source, spec) in env.packages.items():
        if name == "pip":
            continue
        assert pinned_version(spec, source), f"{env_file.name}: {name} {spec!r} is not pinned"


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_pins_satisfy_requirements(env_file):
    """requirements.txt gives lower bounds; every pin must satisfy them, and python must
    satisfy pyproject's requires-python."""
    reqs = read_requirements(REPO / "requirements.txt")
    env = parse_env(env_file)
    checked = 0
    for name, (source, spec) in env.packages.items():
        version = pinned_version(spec, source)
        if version is None:
            continue
        if name == "python":
            project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
            want = SpecifierSet(project["requires-python"])
            assert Version(version) in want, f"python {version} vs requires-python {want}"
            continue
        pypi = pypi_name(name)
        if pypi in reqs:
            want = SpecifierSet(reqs[pypi])
            assert Version(version) in want, f"{env_file.name}: {name}={version} vs {pypi}{want}"
            checked += 1
    assert checked, f"{env_file.name} pins nothing that requirements.txt names"


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_pins_match_tested_versions(env_file):
    """The pins are the versions installed where the tests run. A mismatch is a warning
    (a newer release here is not an error in the env file), shown in pytest's summary."""
    env = parse_env(env_file)
    for name, (source, spec) in env.packages.items():
        version = pinned_version(spec, source)
        if version is None or name in ("python", "pip"):
            continue
        try:
            here = metadata.version(pypi_name(name))
        except metadata.PackageNotFoundError:
            continue
        if Version(here).base_version != Version(version).base_version:
            warnings.warn(
                f"{env_file.name}: {name} pinned {version}, tested here with {here}",
                stacklevel=1,
            )
    tested = f"{sys.version_info.major}.{sys.version_info.minor}"
    py = pinned_version(*reversed(env.packages["python"]))
    assert py is not None and py.startswith(tested), (
        f"{env_file.name}: python {py}; Snakemake runs here on {tested} and rule scripts "
        "import Snakemake's modules, so the minor versions must agree"
    )


@no_workflow
def test_rule_parser_sees_every_rule():
    """The regex parser finds exactly the rules Snakemake itself lists."""
    if shutil.which("snakemake") is None:
        pytest.skip("snakemake not installed")
    cmd = [sys.executable, "-m", "snakemake", "--list-rules", "--nocolor"]
    if (REPO / "config" / "tiny.yaml").exists():
        cmd += ["--configfile", "config/tiny.yaml"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    # one line per rule: `name` or, with a docstring, `name (docstring)`
    listed = {line.split(" (", 1)[0].strip() for line in out.stdout.splitlines() if line.strip()}
    expected = set(RULES)
    # data.smk defines mnist_download only while the raw MNIST files are missing (a clone
    # where the workflow has already downloaded them lists it no more)
    import yaml

    cfg = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text()) if (REPO / "config" / "tiny.yaml").exists() else {}
    from infcore.mnist import mnist_raw_files

    if all(p.exists() for p in mnist_raw_files(REPO / cfg.get("mnist_root", "resources/mnist"))):
        expected.discard("mnist_download")
    assert listed == expected, listed ^ expected


@no_workflow
@pytest.mark.parametrize("rule", WORK_RULES or ["-"])
def test_rule_names_an_env_file(rule):
    r = RULES[rule]
    assert r.conda is not None, f"rule {rule} ({r.smk.name}) has no conda: with a literal path"
    assert r.conda.is_file(), f"rule {rule}: conda env {r.conda} does not exist"
    assert r.conda.parent == ENV_DIR.resolve(), f"rule {rule}: env {r.conda} not under envs/"


@no_workflow
@pytest.mark.parametrize("rule", SCRIPT_RULES or ["-"])
def test_env_provides_script_imports(rule):
    r = RULES[rule]
    assert r.script.is_file(), f"rule {rule}: script {r.script} does not exist"
    if r.conda is None or not r.conda.is_file():
        pytest.fail(f"rule {rule} has no usable conda: env")
    env = parse_env(r.conda)
    missing = {
        module: sorted(str(f.relative_to(REPO)) for f in files)
        for module, files in third_party_imports(r.script).items()
        if env_provides(env, module) is None
    }
    assert not missing, (
        f"rule {rule} runs {r.script.relative_to(REPO)} in {r.conda.name}, which lacks "
        f"{ {m: sorted(distributions_for(m)) for m in missing} } imported by {missing}"
    )


@no_workflow
def test_torch_rules_use_torch_env():
    """Every script that imports torch (directly or through infcore) runs in an env that
    has torch; the plotting env stays free of it (it is large)."""
    plot = parse_env(ENV_DIR / "plot.yaml")
    assert env_provides(plot, "torch") is None
    for rule in SCRIPT_RULES:
        r = RULES[rule]
        if "torch" in third_party_imports(r.script):
            assert r.conda is not None and r.conda.name == "torch.yaml", rule


# --- the helpers themselves, on synthetic files ---------------------------------------------


def test_parse_rules_and_imports(tmp_path):
    (tmp_path / "workflow" / "rules").mkdir(parents=True)
    scripts = tmp_path / "workflow" / "scripts"
    (scripts / "pkg").mkdir(parents=True)
    (tmp_path / "Snakefile").write_text(
        'include: "workflow/rules/a.smk"\nrule all:\n    input: "x"\n'
    )
    (tmp_path / "workflow" / "rules" / "a.smk").write_text(
        "rule a:\n"
        '    output: "x"\n'
        "    conda:\n"
        '        "../../envs/e.yaml"\n'
        '    script: "../scripts/a.py"\n'
        "\n"
        "localrule b:\n"
        "    output: 'y'\n"
        "    conda: '../../envs/f.yaml'\n"
        "    shell: 'touch {output}'\n"
    )
    (scripts / "a.py").write_text("import os\nimport pkg\nfrom pkg import sub\nsub.used()\n")
    (scripts / "pkg" / "__init__.py").write_text("from .sub import used\nimport numpy as np\n")
    (scripts / "pkg" / "sub.py").write_text(
        "from __future__ import annotations\n"
        "import contextlib\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    import pandas\n"
        "try:\n"
        "    import scipy\n"
        "except ImportError:\n"
        "    scipy = None\n"
        "def used():\n"
        "    from torchvision.datasets import MNIST\n"
        "    with contextlib.suppress(ImportError):\n"
        "        import sklearn\n"
        "    return helper()\n"
        "def helper():\n"
        "    import PIL\n"
        "def unused():\n"
        "    import matplotlib\n"
    )
    rules = parse_rules(tmp_path)
    assert set(rules) == {"all", "a", "b"}
    assert rules["a"].conda == (tmp_path / "envs" / "e.yaml").resolve()
    assert rules["a"].script == (scripts / "a.py").resolve()
    assert rules["b"].conda.name == "f.yaml" and rules["b"].has_shell
    assert rules["all"].conda is None and not rules["all"].has_shell
    # used() and what it calls count; unused(), optional and TYPE_CHECKING imports do not
    assert set(third_party_imports(rules["a"].script)) == {"numpy", "torchvision", "PIL"}


def test_parse_env_and_pins(tmp_path):
    f = tmp_path / "e.yaml"
    f.write_text(
        "channels: [conda-forge]\n"
        "dependencies:\n"
        "  - python=3.11\n"
        "  - conda-forge::numpy=2.4.6\n"
        "  - matplotlib-base >=3.8\n"
        "  - pip:\n"
        "      - torch==2.14.1\n"
    )
    env = parse_env(f)
    assert pinned_version(env.packages["numpy"][1], "conda") == "2.4.6"
    assert pinned_version(env.packages["torch"][1], "pip") == "2.14.1"
    assert pinned_version(env.packages["matplotlib-base"][1], "conda") is None
    assert env_provides(env, "matplotlib") == "matplotlib-base"
    assert env_provides(env, "torch") == "torch"
    assert env_provides(env, "pandas") is None
