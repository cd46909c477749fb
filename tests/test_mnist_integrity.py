"""MNIST files are checked on every read and on download (issue 15).

Each defect of the issue has a test here: replaced files must be read (no stale unpacked
copy), a labels file that does not match its images is refused naming it, a truncated .gz is
refused naming it and leaves no temporary file, and an offline download says where to put the
four files and lists their MD5s. The tests catch the built-in exception classes (ValueError,
RuntimeError) so that they run unchanged against the code before the fix, where they fail.
"""

from __future__ import annotations

import gzip
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from fake_mnist import write_fake_mnist, write_idx
from infcore.data import load_mnist
from infcore.mnist import MNIST_FILES, download_mnist, mnist_raw_files

SHARED_MNIST = Path(os.environ.get("INFCORE_MNIST_RAW", "/work/shared/data/MNIST/raw"))
HAVE_REAL = all((SHARED_MNIST / n).is_file() for n in MNIST_FILES)
needs_real = pytest.mark.skipif(not HAVE_REAL, reason=f"real MNIST .gz files not in {SHARED_MNIST}")


def write_fake(root: Path, n_train: int, n_test: int, seed: int) -> Path:
    """Fake MNIST-format .gz files (28 x 28) under ``root``; returns the raw folder."""
    write_fake_mnist(root, n_train=n_train, n_test=n_test, seed=seed)
    return root / "MNIST" / "raw"


def gz_payload(path: Path) -> torch.Tensor:
    """The bytes after an IDX header (4 + 4 per dimension) of a .gz file."""
    with gzip.open(path) as f:
        data = f.read()
    return torch.frombuffer(bytearray(data[4 + 4 * data[3]:]), dtype=torch.uint8)


def only_the_four_files(raw: Path) -> list[str]:
    """Names in ``raw`` other than the four .gz files (temporary or unpacked leftovers)."""
    return sorted(p.name for p in raw.iterdir() if p.name not in MNIST_FILES)


# ------------------------------------------------------------------ replaced files are read


def test_replaced_files_are_read_not_stale_copies(tmp_path):
    raw = write_fake(tmp_path, 120, 30, seed=0)
    first = load_mnist(tmp_path, validation_size=20)
    assert first.n_train == 100
    write_fake(tmp_path, 150, 40, seed=7)  # the user replaces the four files
    second = load_mnist(tmp_path, validation_size=20)
    assert (second.n_train, second.n_test) == (130, 40)
    pixels = gz_payload(raw / "train-images-idx3-ubyte.gz").reshape(150, 784)
    assert torch.equal(second.X_train, pixels[20:].double() / 255.0)
    assert torch.equal(second.y_train, gz_payload(raw / "train-labels-idx1-ubyte.gz")[20:].long())
    assert second.info["canonical_files"] is False
    assert only_the_four_files(raw) == []  # nothing unpacked next to the archives


@needs_real
def test_fake_files_replaced_by_real_ones(tmp_path):
    raw = write_fake(tmp_path, 120, 30, seed=0)
    load_mnist(tmp_path, validation_size=20)
    for name in MNIST_FILES:
        (raw / name).unlink()
        shutil.copy(SHARED_MNIST / name, raw / name)
    ds = load_mnist(tmp_path, max_train=50, max_test=20)
    assert ds.info["canonical_files"] is True
    assert ds.info["train_range"] == [5000, 5050] and ds.n_test == 20
    labels = gz_payload(raw / "train-labels-idx1-ubyte.gz")
    assert labels.numel() == 60000  # the real files, not the 120 fake images
    assert torch.equal(ds.y_train, labels[5000:5050].long())
    assert only_the_four_files(raw) == []


@needs_real
def test_canonical_only_when_the_checksums_say_so(tmp_path):
    """Same content, other gzip bytes (recompressed): read fine, but not canonical."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        shutil.copy(SHARED_MNIST / name, raw / name)
    with gzip.open(SHARED_MNIST / "t10k-labels-idx1-ubyte.gz") as f:
        data = f.read()
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()
    with gzip.GzipFile(raw / "t10k-labels-idx1-ubyte.gz", "wb", mtime=0, compresslevel=1) as f:
        f.write(data)
    ds = load_mnist(tmp_path, max_train=10)
    assert ds.info["canonical_files"] is False and ds.n_test == 10000
    assert ds.info["files_md5"]["train-images-idx3-ubyte.gz"] == MNIST_FILES["train-images-idx3-ubyte.gz"]


# ------------------------------------------------------------------------ inconsistent sets


def test_label_count_must_match_image_count(tmp_path):
    raw = write_fake(tmp_path, 120, 30, seed=0)
    write_idx(raw / "train-labels-idx1-ubyte.gz", torch.zeros(50, dtype=torch.uint8))
    with pytest.raises(ValueError) as exc:
        load_mnist(tmp_path, validation_size=20)
    msg = str(exc.value)
    assert str(raw / "train-labels-idx1-ubyte.gz") in msg
    assert "50 train labels" in msg and "120 images" in msg and "expected one label per image" in msg


def test_truncated_gz_is_named_and_leaves_no_temp_file(tmp_path):
    raw = write_fake(tmp_path, 120, 30, seed=0)
    path = raw / "train-images-idx3-ubyte.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError) as exc:
        load_mnist(tmp_path, validation_size=20)
    msg = str(exc.value)
    assert str(path) in msg and "truncated" in msg and f"found {len(data) // 2} bytes" in msg
    assert only_the_four_files(raw) == []


def _idx_gz(path: Path, magic: bytes, dims: list[int], payload: bytes) -> None:
    header = magic + b"".join(d.to_bytes(4, "big") for d in dims)
    with gzip.open(path, "wb") as f:
        f.write(header + payload)


BAD_FILES = [
    # (id, file, how to break it, substrings of the message)
    ("images-under-labels-name", "train-labels-idx1-ubyte.gz",
     lambda raw, p: shutil.copy(raw / "train-images-idx3-ubyte.gz", p),
     ["wrong IDX magic number: expected 0x00000801", "found 0x00000803"]),
    ("payload-short", "t10k-images-idx3-ubyte.gz",
     lambda raw, p: _idx_gz(p, b"\x00\x00\x08\x03", [30, 28, 28], bytes(30 * 784 - 5)),
     ["payload size does not match the header: expected 30 x 28 x 28 = 23520 bytes, found 23515"]),
    ("label-out-of-range", "t10k-labels-idx1-ubyte.gz",
     lambda raw, p: _idx_gz(p, b"\x00\x00\x08\x01", [30], bytes([3] * 29 + [12])),
     ["labels must be digits 0-9, found the value 12"]),
    ("not-gzip", "train-images-idx3-ubyte.gz",
     lambda raw, p: p.write_bytes(b"<html>404 Not Found</html>"),
     ["not a gzip file: expected the gzip magic 1f8b, found first bytes 3c68746d"]),
    ("uncompressed-idx", "t10k-labels-idx1-ubyte.gz",
     lambda raw, p: p.write_bytes(gzip.decompress(p.read_bytes())),
     ["not a gzip file", "an uncompressed IDX file: gzip it"]),
    ("image-size-differs", "t10k-images-idx3-ubyte.gz",
     lambda raw, p: _idx_gz(p, b"\x00\x00\x08\x03", [30, 10, 10], bytes(3000)),
     ["test images are 10 x 10 but the train images", "are 28 x 28"]),
    ("missing", "t10k-labels-idx1-ubyte.gz", lambda raw, p: p.unlink(),
     ["MNIST file(s) missing: ", "found 3", "mnist_download"]),
]


@pytest.mark.parametrize("name,breaker,expected", [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_bad_file_is_refused_naming_it(tmp_path, name, breaker, expected):
    from infcore.mnist import MnistFileError

    raw = write_fake(tmp_path, 120, 30, seed=0)
    breaker(raw, raw / name)
    with pytest.raises(MnistFileError) as exc:
        load_mnist(tmp_path, validation_size=20)
    msg = str(exc.value)
    assert str(raw / name) in msg, msg
    for text in expected:
        assert text in msg, f"{text!r} not in {msg!r}"
    for md5 in MNIST_FILES.values():  # every message says what the real files are
        assert md5 in msg
    assert only_the_four_files(raw) == [] or name == "t10k-labels-idx1-ubyte.gz"


def test_config_check_counts_come_from_the_archives(tmp_path):
    """mnist_counts (the Snakefile's config check) reads the .gz, not a stale unpacked copy."""
    from infcore.mnist import mnist_counts

    raw = write_fake(tmp_path, 120, 30, seed=0)
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big"))
    assert mnist_counts(tmp_path) == (120, 30)


# ---------------------------------------------------------------------------- download


def test_offline_download_says_where_to_put_the_files(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(RuntimeError) as exc:
        download_mnist(tmp_path)
    msg = str(exc.value)
    raw = tmp_path / "MNIST" / "raw"
    assert f"into {raw}/" in msg and "offline" in msg
    for name, md5 in MNIST_FILES.items():
        assert f"{md5}  {name}" in msg
    assert "Temporary failure in name resolution" in msg  # what the mirrors said
    assert list(raw.iterdir()) == []  # no partial file


def _mirror(tmp_path: Path, files: dict[str, bytes]) -> str:
    d = tmp_path / "mirror"
    d.mkdir()
    for name, data in files.items():
        (d / name).write_bytes(data)
    return d.as_uri() + "/"


def test_downloaded_file_with_wrong_md5_is_not_kept(tmp_path):
    from infcore.mnist import MnistDownloadError

    bad = _mirror(tmp_path, {n: b"\x1f\x8b not the file" for n in MNIST_FILES})
    with pytest.raises(MnistDownloadError) as exc:
        download_mnist(tmp_path / "root", mirrors=[bad, "http://127.0.0.1:9/"], timeout=5)
    msg = str(exc.value)
    assert f"{bad}train-images-idx3-ubyte.gz: downloaded file has MD5" in msg
    assert f"expected {MNIST_FILES['train-images-idx3-ubyte.gz']} (not kept)" in msg
    assert "http://127.0.0.1:9/train-images-idx3-ubyte.gz" in msg  # the second mirror was tried
    assert list((tmp_path / "root" / "MNIST" / "raw").iterdir()) == []


@needs_real
def test_download_from_a_mirror_checks_and_keeps(tmp_path):
    from infcore.mnist import read_mnist

    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    shutil.copy(SHARED_MNIST / "t10k-labels-idx1-ubyte.gz", raw)  # present: not fetched again
    good = _mirror(tmp_path, {n: (SHARED_MNIST / n).read_bytes() for n in MNIST_FILES
                              if n != "t10k-labels-idx1-ubyte.gz"})
    seen = []
    paths = download_mnist(tmp_path / "root", mirrors=["http://127.0.0.1:9/", good], timeout=5,
                           log=seen.append)
    assert paths == mnist_raw_files(tmp_path / "root")
    fetched = [s for s in seen if s.startswith("downloaded ")]
    assert len(fetched) == 3 and all("canonical" in s for s in fetched)
    assert sum("http://127.0.0.1:9/" in s for s in seen) == 3  # the first mirror failed each time
    assert read_mnist(tmp_path / "root").canonical
    assert only_the_four_files(raw) == []


def test_mirrors_from_the_environment():
    from infcore.mnist import MNIST_MIRRORS, mnist_mirrors

    assert mnist_mirrors({}) == MNIST_MIRRORS
    assert mnist_mirrors({"INFCORE_MNIST_MIRRORS": "file:///a/b http://h/x/ "}) == (
        "file:///a/b/", "http://h/x/")


def test_workflow_download_offline_keeps_the_files_already_there(tmp_path):
    """Through the CLI: one mnist_download job per missing file; offline it fails with the
    message, and the three files already copied are not deleted (they are no job's output)."""
    from workflow_utils import copy_workflow, run_snakemake

    wd = copy_workflow(tmp_path / "wf")
    raw = write_fake(wd / "resources" / "mnist", 600, 100, seed=0)
    (raw / "t10k-images-idx3-ubyte.gz").unlink()
    before = {n: (raw / n).read_bytes() for n in MNIST_FILES if (raw / n).exists()}
    res = run_snakemake(wd, "resources/datasets/tiny_mnist/dataset.json", "--cores", "1",
                        "--configfile", "config/tiny.yaml",
                        env={"INFCORE_MNIST_MIRRORS": "http://127.0.0.1:9/"})
    assert res.returncode != 0, res.stdout[-3000:]
    log = (wd / "logs/mnist_download/t10k-images-idx3-ubyte.gz.log").read_text()
    assert "could not download t10k-images-idx3-ubyte.gz" in log
    assert "http://127.0.0.1:9/t10k-images-idx3-ubyte.gz" in log
    assert "into resources/mnist/MNIST/raw/ and run again" in log
    assert all(md5 in log for md5 in MNIST_FILES.values())
    assert {n: (raw / n).read_bytes() for n in before} == before
    assert sorted(p.name for p in raw.iterdir()) == sorted(before)  # no partial file
    assert res.stdout.count("localrule mnist_download:") == 1
