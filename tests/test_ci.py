"""CI runs the real-MNIST tier: .ci/run copies the files and sets INFCORE_REQUIRE_MNIST=1,
under which tests/test_mnist_slow.py fails instead of skipping when it finds no files."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import test_mnist_slow
from workflow_utils import REPO

FILES = test_mnist_slow.MNIST_FILES


def test_ci_run_requires_the_real_mnist_tier():
    text = (REPO / ".ci" / "run").read_text()
    lines = [ln.split("#")[0].strip() for ln in text.splitlines()]
    assert "bash .ci/copy_mnist.sh" in lines
    assert "export INFCORE_REQUIRE_MNIST=1" in lines and "export INFCORE_REQUIRE_SLURM=1" in lines
    # copied (and required) before the tests run
    assert lines.index("bash .ci/copy_mnist.sh") < lines.index("python -m pytest")
    assert lines.index("export INFCORE_REQUIRE_MNIST=1") < lines.index("python -m pytest")


def _sandbox(tmp_path, present):
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(REPO / ".ci" / "copy_mnist.sh", repo / ".ci" / "copy_mnist.sh")
    raw = tmp_path / "shared" / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in present:
        (raw / f).write_bytes(f.encode())
    res = subprocess.run(["bash", str(repo / ".ci" / "copy_mnist.sh")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    return repo, res


def test_copy_mnist_copies_from_the_parents_shared_folder(tmp_path):
    repo, res = _sandbox(tmp_path, FILES)
    assert res.returncode == 0, res.stderr
    for f in FILES:
        assert (repo / "resources/mnist/MNIST/raw" / f).read_bytes() == f.encode()


def test_copy_mnist_fails_naming_the_missing_files(tmp_path):
    repo, res = _sandbox(tmp_path, FILES[:2])
    assert res.returncode != 0
    assert "MNIST files missing" in res.stderr and FILES[2] in res.stderr and FILES[3] in res.stderr
    assert not (repo / "resources").exists()


@pytest.mark.parametrize("required", [False, True])
def test_real_mnist_tier_skips_or_fails_without_files(tmp_path, monkeypatch, required):
    """The real-MNIST test itself, with no files found: a skip, or under
    INFCORE_REQUIRE_MNIST=1 a failure naming the variable."""
    monkeypatch.setattr(test_mnist_slow, "mnist_raw", lambda: None)
    if required:
        monkeypatch.setenv("INFCORE_REQUIRE_MNIST", "1")
    else:
        monkeypatch.delenv("INFCORE_REQUIRE_MNIST", raising=False)
    expected = pytest.fail.Exception if required else pytest.skip.Exception
    with pytest.raises(expected, match="INFCORE_REQUIRE_MNIST=1 but real MNIST not found" if required
                       else "real MNIST not found"):
        test_mnist_slow.test_paper_protocol_on_real_mnist(tmp_path)
    assert os.environ.get("INFCORE_REQUIRE_MNIST") == ("1" if required else None)
