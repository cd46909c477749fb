"""The raw MNIST files: the four gzipped IDX archives, read and checked straight from the
archives (no unpacked copy that could go stale), and downloaded from the canonical mirrors
when missing.

A set whose MD5s are the canonical ones is MNIST; any other set (e.g. the small fake files the
tests write) must still be a consistent IDX set: right magic numbers, one label per image,
payloads of the size the headers give, labels 0-9, train and test images of one size. The
datasets built from these files are in :mod:`infcore.data`.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where used: the Snakefile imports this module
    import torch

# torchvision's resource list: file name (as stored, gzipped) -> md5 of the canonical archive.
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_SIZES = (60000, 10000)  # canonical (train, test) image counts


MNIST_IDX = {  # file name -> (IDX magic number, dimensions, what it holds)
    "train-images-idx3-ubyte.gz": (0x0803, 3, "train images"),
    "train-labels-idx1-ubyte.gz": (0x0801, 1, "train labels"),
    "t10k-images-idx3-ubyte.gz": (0x0803, 3, "test images"),
    "t10k-labels-idx1-ubyte.gz": (0x0801, 1, "test labels"),
}
# Where download_mnist fetches the files (torchvision's MNIST.mirrors, in its order).
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MIRRORS_ENV = "INFCORE_MNIST_MIRRORS"


class MnistFileError(ValueError):
    """A raw MNIST file is missing, damaged, or does not belong with the others."""


class MnistDownloadError(RuntimeError):
    """No mirror delivered an MNIST file with the canonical MD5."""


def mnist_raw_dir(root: str | Path) -> Path:
    """Folder where torchvision keeps the raw MNIST files for ``root``."""
    return Path(root) / "MNIST" / "raw"


def mnist_raw_files(root: str | Path) -> list[Path]:
    """The four gzipped IDX files under ``root`` (torchvision layout)."""
    return [mnist_raw_dir(root) / name for name in MNIST_FILES]


def canonical_md5_list(indent: str = "  ") -> str:
    """The four file names with their canonical MD5s, one per line (for messages)."""
    return "\n".join(f"{indent}{md5}  {name}" for name, md5 in MNIST_FILES.items())


def _what_to_do(raw: Path) -> str:
    return (
        f"To use MNIST, put the four original files (gzipped, as distributed) into {raw}/; "
        f"their MD5s are (check with `md5sum {raw}/*.gz`):\n{canonical_md5_list()}\n"
        "For a fake set, write all four files together (tests/fake_mnist.py)."
    )


def _open_gz(path: Path):
    """Open a .gz file, mapping a non-gzip file to a :class:`MnistFileError`."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] != b"\x1f\x8b":
        found = f"first bytes {head.hex()}"
        if len(head) == 4 and head[:2] == b"\x00\x00" and head[2] == 0x08:
            found += " (an uncompressed IDX file: gzip it, e.g. `gzip -c FILE > NAME.gz`)"
        raise MnistFileError(
            f"{path}: not a gzip file: expected the gzip magic 1f8b, found {found}. "
            + _what_to_do(path.parent)
        )
    return gzip.open(path, "rb")


def _gz_error(path: Path, err: Exception, expected_md5: str | None) -> MnistFileError:
    size = path.stat().st_size
    if isinstance(err, EOFError):
        what = "truncated: the gzip stream ends before its end-of-stream marker"
    else:
        what = f"damaged gzip data ({err})"
    return MnistFileError(
        f"{path}: {what}; expected a complete gzip file"
        + (f" (canonical MD5 {expected_md5})" if expected_md5 else "")
        + f", found {size} bytes with MD5 {md5sum(path)}. Delete it and run again (the workflow's "
        "mnist_download rule fetches missing files), or copy it again. "
        + _what_to_do(path.parent)
    )


def read_idx_header(path: str | Path) -> tuple[int, tuple[int, ...]]:
    """(magic number, dimensions) of an IDX file (gzipped if the name ends in .gz), read from
    its header only."""
    path = Path(path)
    try:
        with (_open_gz(path) if path.suffix == ".gz" else open(path, "rb")) as f:
            head = f.read(4)
            if len(head) == 4 and head[:2] == b"\x00\x00":
                dims = f.read(4 * head[3])
            else:
                dims = b""
    except (EOFError, OSError, zlib.error) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise _gz_error(path, err, MNIST_FILES.get(path.name)) from None
    if len(head) < 4 or head[:2] != b"\x00\x00" or len(dims) < 4 * head[3] or head[3] == 0:
        raise MnistFileError(f"{path}: not an IDX file (header {head.hex() or 'empty'} too short "
                             "or not of the form 0000 TT NN)")
    magic = struct.unpack(">I", head)[0]
    return magic, struct.unpack(f">{head[3]}I", dims)


def read_idx_count(path: str | Path) -> int:
    """Number of items in an IDX file (gzipped or not), read from its header only."""
    magic, dims = read_idx_header(path)
    if magic >> 8 != 0x08 or not 1 <= magic & 0xFF <= 3:
        raise MnistFileError(f"{Path(path)}: not an unsigned-byte IDX file (magic {magic:#x})")
    return int(dims[0])


def mnist_counts(root: str | Path) -> tuple[int, int] | None:
    """(train images, test images) from the headers of the .gz files under ``root``.

    Returns None when the files are not there (yet): callers then assume the canonical
    60000 / 10000.
    """
    raw = mnist_raw_dir(root)
    paths = [raw / "train-images-idx3-ubyte.gz", raw / "t10k-images-idx3-ubyte.gz"]
    if not all(p.exists() for p in paths):
        return None
    train, test = (read_idx_count(p) for p in paths)
    return train, test


def md5sum(path: str | Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class MnistRaw:
    """The four MNIST arrays as stored (uint8) and the files they came from.

    Attributes:
        train_images, test_images: ``(n, rows, cols)`` uint8.
        train_labels, test_labels: ``(n,)`` uint8.
        files_md5: file name -> MD5 of the .gz as read.
        canonical: every MD5 is the canonical one (the files are MNIST itself).
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    files_md5: dict
    canonical: bool


def _read_idx_gz(path: Path, expected_md5: str) -> tuple[torch.Tensor, str]:
    """(array, MD5 of the .gz) of a gzipped IDX file, checked: magic, header, payload size."""
    import torch

    magic_expected, ndim, what = MNIST_IDX[path.name]
    h = hashlib.md5()
    try:
        with _open_gz(path) as f:
            data = f.read()
    except (EOFError, OSError, zlib.error) as err:
        raise _gz_error(path, err, expected_md5) from None
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    md5 = h.hexdigest()
    hint = _what_to_do(path.parent)
    if len(data) < 4 + 4 * ndim:
        raise MnistFileError(f"{path} ({what}): IDX header too short: expected {4 + 4 * ndim} "
                             f"bytes, found {len(data)} bytes of data. {hint}")
    magic = struct.unpack(">I", data[:4])[0]
    if magic != magic_expected:
        raise MnistFileError(
            f"{path} ({what}): wrong IDX magic number: expected {magic_expected:#010x} "
            f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''}), found {magic:#010x}. "
            f"Is it another MNIST file under this name? {hint}"
        )
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    need = math.prod(dims)
    payload = len(data) - 4 - 4 * ndim
    if payload != need:
        raise MnistFileError(
            f"{path} ({what}): payload size does not match the header: expected "
            f"{' x '.join(map(str, dims))} = {need} bytes, found {payload}. {hint}"
        )
    arr = torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=4 + 4 * ndim)
    return arr.reshape(dims), md5


def read_mnist(root: str | Path) -> MnistRaw:
    """Read and check the four gzipped MNIST IDX files under ``root`` (``MNIST/raw/``).

    The .gz archives are read directly (nothing is unpacked to disk). The MD5 of each is
    compared with the canonical one; whatever they are, the set must be consistent: IDX magic
    numbers and payload sizes as the headers say, as many labels as images in each split,
    labels 0-9, train and test images of one size. Every failure is a
    :class:`MnistFileError` naming the file, what was expected and found, and what to do.
    """
    raw = mnist_raw_dir(root)
    missing = [p for p in mnist_raw_files(root) if not p.exists()]
    if missing:
        raise MnistFileError(
            f"MNIST file(s) missing: {', '.join(map(str, missing))}; expected all four files in "
            f"{raw}/, found {4 - len(missing)}. The workflow's mnist_download rule fetches "
            "them. " + _what_to_do(raw)
        )
    arrays, md5s = {}, {}
    for name, expected in MNIST_FILES.items():
        arrays[name], md5s[name] = _read_idx_gz(raw / name, expected)
    hint = _what_to_do(raw)
    for split, images, labels in (("train", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                                  ("test", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")):
        n_img, n_lab = int(arrays[images].shape[0]), int(arrays[labels].shape[0])
        if n_img != n_lab:
            raise MnistFileError(
                f"{raw / labels}: {n_lab} {split} labels, but {raw / images} holds {n_img} "
                f"images: expected one label per image ({n_img} labels). The two files are "
                f"not from the same set; replace both. {hint}"
            )
        top = int(arrays[labels].max()) if n_lab else 0
        if top > 9:
            raise MnistFileError(f"{raw / labels}: labels must be digits 0-9, found the "
                                 f"value {top}. {hint}")
    tr, te = arrays["train-images-idx3-ubyte.gz"], arrays["t10k-images-idx3-ubyte.gz"]
    if tuple(tr.shape[1:]) != tuple(te.shape[1:]):
        raise MnistFileError(
            f"{raw / 't10k-images-idx3-ubyte.gz'}: test images are {te.shape[1]} x {te.shape[2]} "
            f"but the train images ({raw / 'train-images-idx3-ubyte.gz'}) are {tr.shape[1]} x "
            f"{tr.shape[2]}: expected one image size. {hint}"
        )
    canonical = all(md5s[k] == v for k, v in MNIST_FILES.items())
    return MnistRaw(tr, arrays["train-labels-idx1-ubyte.gz"], te,
                    arrays["t10k-labels-idx1-ubyte.gz"], md5s, canonical)


def _download_one(url: str, dest: Path, md5: str, timeout: float) -> None:
    """Fetch ``url`` into ``dest`` through a temporary file; refuse a wrong MD5."""
    import urllib.request

    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        h = hashlib.md5()
        req = urllib.request.Request(url, headers={"User-Agent": "infcore"})
        with urllib.request.urlopen(req, timeout=timeout) as r, open(tmp, "wb") as f:
            for block in iter(lambda: r.read(1 << 20), b""):
                h.update(block)
                f.write(block)
        if h.hexdigest() != md5:
            raise MnistFileError(f"downloaded file has MD5 {h.hexdigest()}, expected {md5} "
                                 "(not kept)")
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def mnist_mirrors(environ=os.environ) -> tuple[str, ...]:
    """Mirrors to download from: ``$INFCORE_MNIST_MIRRORS`` (URLs of folders holding the four
    files, separated by spaces; e.g. a local copy, ``file:///data/mnist/``) or
    :data:`MNIST_MIRRORS`."""
    urls = environ.get(MIRRORS_ENV, "").split()
    return tuple(u if u.endswith("/") else u + "/" for u in urls) or MNIST_MIRRORS


def download_mnist(root: str | Path, names=None, mirrors=MNIST_MIRRORS, timeout: float = 60.0,
                   log: Callable[[str], None] | None = None) -> list[Path]:
    """Fetch the MNIST files (all four, or ``names``) missing under ``root`` (``MNIST/raw/``).

    Files already there are left as they are (:func:`read_mnist` checks them on every read).
    Each download goes to a temporary file, is checked against the canonical MD5 and only
    then takes the file's name. When no mirror delivers a file (offline, mirrors down), a
    :class:`MnistDownloadError` lists what each mirror said, where to put the four files
    and their MD5s. Returns the paths of the four files.
    """
    raw = mnist_raw_dir(root)
    raw.mkdir(parents=True, exist_ok=True)
    names = list(MNIST_FILES) if names is None else list(names)
    unknown = [n for n in names if n not in MNIST_FILES]
    if unknown:
        raise ValueError(f"not an MNIST file name: {unknown}; expected one of {list(MNIST_FILES)}")
    for name in names:
        md5 = MNIST_FILES[name]
        dest = raw / name
        if dest.exists():
            continue
        errors = []
        for mirror in mirrors:
            url = mirror + name
            try:
                _download_one(url, dest, md5, timeout)
            except (OSError, MnistFileError) as err:  # URLError, timeouts, HTTP errors
                errors.append(f"  {url}: {err}")
                if log:
                    log(f"{url}: {err}")
                continue
            if log:
                log(f"downloaded {url} -> {dest} (MD5 {md5}, canonical)")
            break
        else:
            tried = "\n".join(errors) or "  (no mirrors given)"
            raise MnistDownloadError(
                f"could not download {name} (tried {len(errors)} mirror(s)):\n{tried}\n"
                f"If this machine is offline or the mirrors are down, put the four MNIST files "
                f"(gzipped, as distributed; e.g. copied from another machine's {raw}/ or "
                f"torchvision's data folder) into {raw}/ and run again (or name a mirror in "
                f"${MIRRORS_ENV}). Their MD5s (check with "
                f"`md5sum {raw}/*.gz`):\n{canonical_md5_list()}"
            )
    return mnist_raw_files(root)
