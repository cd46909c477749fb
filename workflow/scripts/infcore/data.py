"""Datasets for the experiments: MNIST (read and checked from its gzipped IDX files by
:mod:`infcore.mnist`) and seeded random data.

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

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .mnist import read_mnist

if TYPE_CHECKING:  # torch is imported where used: the Snakefile imports this module
    import torch


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
        "source": "infcore.mnist.read_mnist (gzipped IDX files, checked)",
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
