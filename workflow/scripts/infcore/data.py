"""Datasets for the experiments: MNIST (read and checked from its gzipped IDX files) and seeded
random data.

A dataset is a :class:`Dataset`: float64 inputs ``X_train`` (n, d) and ``X_test`` (m, d),
int64 labels, the number of classes and a small ``info`` dict (JSON-able) saying where it
came from. ``Dataset.to_dict`` / ``Dataset.from_dict`` give the plain dict of tensors that
``torch.save`` stores and ``torch.load(weights_only=True)`` reads back.

MNIST follows Koh & Liang (2017): pixels / 255 flattened to 784 values; the first
``validation_size`` training images (5000 in the paper) are held out, so the training set
is the remaining 55000 images; the test set is the 10000 t10k images. The CNN experiments
use :func:`load_small_mnist`: the paper's random 10% of those 55000, as ``1 x 28 x 28`` images.
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
from dataclasses import dataclass, field
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


@dataclass
class Dataset:
    """Train and test tensors of one experiment (float64 inputs, int64 labels)."""

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    info: dict = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return int(self.X_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.X_test.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    def to_dict(self) -> dict:
        return {
            "X_train": self.X_train,
            "y_train": self.y_train,
            "X_test": self.X_test,
            "y_test": self.y_test,
            "n_classes": int(self.n_classes),
        }

    @classmethod
    def from_dict(cls, d: dict, info: dict | None = None) -> Dataset:
        return cls(d["X_train"], d["y_train"], d["X_test"], d["y_test"], int(d["n_classes"]), info or {})

    def describe(self) -> dict:
        """JSON-able summary: shapes, dtypes, class counts, input range, and ``info``."""
        import torch


        def counts(y):
            return torch.bincount(y, minlength=self.n_classes).tolist()

        return {
            **self.info,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "n_features": self.n_features,
            "n_classes": int(self.n_classes),
            "dtype": str(self.X_train.dtype).replace("torch.", ""),
            "train_class_counts": counts(self.y_train),
            "test_class_counts": counts(self.y_test),
            "x_min": float(torch.cat([self.X_train.min(0).values, self.X_test.min(0).values]).min())
            if self.n_train and self.n_test
            else None,
            "x_max": float(torch.cat([self.X_train.max(0).values, self.X_test.max(0).values]).max())
            if self.n_train and self.n_test
            else None,
        }


# --------------------------------------------------------------------------------- MNIST
#
# The four gzipped IDX files are the only copy: they are read (and checked) straight from the
# archives on every load, so no unpacked copy can go stale. A set whose MD5s are the canonical
# ones is MNIST; any other set (e.g. the small fake files the tests write) must still be a
# consistent IDX set: right magic numbers, one label per image, payloads of the size the
# headers give, labels 0-9, train and test images of one size.

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


def load_mnist(
    root: str | Path,
    validation_size: int = 5000,
    max_train: int | None = None,
    max_test: int | None = None,
    fraction: float | None = None,
    subset_seed: int = 0,
) -> Dataset:
    """MNIST as in the paper: pixels/255, flattened, float64; training images after the first
    ``validation_size`` (55000 by default); all test images. ``fraction``: keep the CNN
    experiments' random share of those training images, drawn as the original code draws it
    (:func:`small_mnist_indices`, numpy seed ``subset_seed``; 0.1 -> the paper's 5,500), in
    that order. ``max_train`` / ``max_test`` then keep only the first that many points (None:
    all). The files are checked by :func:`read_mnist`."""
    import torch

    m = read_mnist(root)
    n_all = int(m.train_images.shape[0])
    if not 0 <= validation_size < n_all:
        raise ValueError(f"validation_size = {validation_size} must be in [0, {n_all})")

    def prep(images):
        return images.reshape(images.shape[0], -1).to(torch.float64) / 255.0

    src = torch.arange(validation_size, n_all)
    if fraction is not None:
        src = small_mnist_indices(n_all - validation_size, fraction, subset_seed) + validation_size
    if max_train is not None:
        src = src[:max_train]
    X_train, y_train = prep(m.train_images[src]), m.train_labels[src].long()
    X_test, y_test = prep(m.test_images[:max_test]), m.test_labels[:max_test].long()
    info = {
        "kind": "mnist",
        "source": "infcore.data.read_mnist (gzipped IDX files, checked)",
        "root": str(root),
        "validation_size": int(validation_size),
        "train_range": [int(validation_size), int(validation_size) + int(X_train.shape[0])]
        if fraction is None else None,
        "train_subset": None if fraction is None else {"fraction": float(fraction), "subset_seed": int(subset_seed),
                                                       "first_sources": [int(s) for s in src[:5]]},
        "preprocessing": "pixels / 255, flattened row-major, float64",
        "files_md5": m.files_md5,
        "canonical_files": m.canonical,
    }
    return Dataset(X_train.contiguous(), y_train, X_test.contiguous(), y_test, 10, info)


# ------------------------------------------------------------- MNIST subset (the CNN)


@dataclass
class MnistSubset:
    """The paper's MNIST subset.

    Attributes:
        x_train: ``(n, 1, 28, 28)`` float32 pixels / 255 (n = 5,500 in the paper).
        y_train: ``(n,)`` int64 labels.
        x_test: ``(10000, 1, 28, 28)`` float32.
        y_test: ``(10000,)`` int64.
        train_source: ``(n,)`` index of each training point in the 60,000 MNIST train images.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    train_source: torch.Tensor

    def to(self, device) -> MnistSubset:
        """The same subset with the images and labels on ``device`` (``train_source`` stays)."""
        return MnistSubset(self.x_train.to(device), self.y_train.to(device), self.x_test.to(device),
                           self.y_test.to(device), self.train_source)


def small_mnist_indices(num_train: int = 55_000, fraction: float = 0.1,
                        seed: int = 0) -> torch.Tensor:
    """Indices (into the 55,000 non-validation images) of the original 10% subset.

    Reproduces ``np.random.seed(0); perm = arange(55000); np.random.shuffle(perm);
    perm[:5500]`` of ``load_small_mnist`` exactly.
    """
    import numpy as np
    import torch

    perm = np.arange(num_train)
    np.random.RandomState(seed).shuffle(perm)
    return torch.from_numpy(perm[: int(num_train * fraction)].copy())


def load_small_mnist(root: str | Path, fraction: float = 0.1, seed: int = 0,
                     validation_size: int = 5000, download: bool = False) -> MnistSubset:
    """Load MNIST (checked by :func:`read_mnist`) and take the paper's subset (the CNN
    experiments).

    Args:
        root: torchvision-layout root (holds ``MNIST/raw/*.gz``).
        fraction: share of the 55,000 training images kept (0.1).
        seed: numpy seed of the subset (0).
        validation_size: leading training images held out as validation (5,000).
        download: first fetch missing files (:func:`download_mnist`).
    """
    if download:
        download_mnist(root)
    m = read_mnist(root)
    idx = small_mnist_indices(int(m.train_labels.shape[0]) - validation_size, fraction, seed)
    src = idx + validation_size
    x_train = (m.train_images[src].float() / 255.0).unsqueeze(1)
    x_test = (m.test_images.float() / 255.0).unsqueeze(1)
    return MnistSubset(x_train, m.train_labels[src].long(), x_test, m.test_labels.long(), src)


# -------------------------------------------------------------------------------- random


def make_random(
    n_features: int,
    n_classes: int,
    n_train: int,
    n_test: int,
    seed: int = 0,
    input_std: float = 0.3,
    teacher_scale: float = 3.0,
    labels: str = "softmax",
    label_noise: float = 0.0,
) -> Dataset:
    """Seeded random classification data with labels from a random linear teacher.

    Inputs ``x ~ N(0, input_std^2 I)`` (train and test from the same distribution). A teacher
    matrix ``W*`` (n_classes x n_features) has entries ``N(0, 1 / (n_features * input_std^2))``
    so each teacher logit ``W* x`` has unit variance; the logits are multiplied by
    ``teacher_scale``. Labels: ``"softmax"`` samples ``y ~ Categorical(softmax(teacher_scale *
    W* x))``; ``"argmax"`` takes the teacher's argmax. Then a ``label_noise`` fraction of the
    points (chosen at random) gets a uniformly random class. Everything is drawn from one
    ``torch.Generator`` seeded with ``seed``, in a fixed order.
    """
    import torch

    if labels not in ("softmax", "argmax"):
        raise ValueError(f"labels must be 'softmax' or 'argmax', not {labels!r}")
    if not 0.0 <= label_noise <= 1.0:
        raise ValueError(f"label_noise = {label_noise} must be in [0, 1]")
    g = torch.Generator().manual_seed(int(seed))
    n = n_train + n_test
    X = torch.randn(n, n_features, generator=g, dtype=torch.float64) * input_std
    W = torch.randn(n_classes, n_features, generator=g, dtype=torch.float64)
    W /= math.sqrt(n_features) * input_std
    logits = teacher_scale * (X @ W.T)
    if labels == "softmax":
        y = torch.multinomial(torch.softmax(logits, dim=1), 1, generator=g).squeeze(1)
    else:
        y = logits.argmax(dim=1)
    noisy = torch.rand(n, generator=g, dtype=torch.float64) < label_noise
    y = torch.where(noisy, torch.randint(n_classes, (n,), generator=g), y).long()
    info = {
        "kind": "random",
        "seed": int(seed),
        "input_std": float(input_std),
        "teacher_scale": float(teacher_scale),
        "labels": labels,
        "label_noise": float(label_noise),
        "teacher_accuracy": float((logits.argmax(1) == y).double().mean()),
        "generation": "x ~ N(0, input_std^2 I); y from softmax(teacher_scale * W* x) (or argmax), "
        "W* ~ N(0, 1/(d input_std^2)); then label_noise fraction relabelled uniformly",
    }
    return Dataset(
        X[:n_train].contiguous(), y[:n_train], X[n_train:].contiguous(), y[n_train:], n_classes, info
    )


def make_dataset(settings: dict, mnist_root: str | Path | None = None) -> Dataset:
    """Build the dataset an experiment's ``dataset`` settings describe (see config/schema.yaml)."""
    kind = settings["kind"]
    if kind == "mnist":
        if mnist_root is None:
            raise ValueError("an MNIST dataset needs mnist_root")
        return load_mnist(
            mnist_root,
            validation_size=settings.get("validation_size", 5000),
            max_train=settings.get("max_train"),
            max_test=settings.get("max_test"),
            fraction=settings.get("fraction"),
            subset_seed=settings.get("subset_seed", 0),
        )
    if kind == "random":
        return make_random(
            n_features=settings["n_features"],
            n_classes=settings["n_classes"],
            n_train=settings["n_train"],
            n_test=settings["n_test"],
            seed=settings.get("seed", 0),
            input_std=settings.get("input_std", 0.3),
            teacher_scale=settings.get("teacher_scale", 3.0),
            labels=settings.get("labels", "softmax"),
            label_noise=settings.get("label_noise", 0.0),
        )
    raise ValueError(f"unknown dataset kind {kind!r}")
