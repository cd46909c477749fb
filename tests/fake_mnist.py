"""Test fixtures: small MNIST-format files (gzipped IDX, torchvision layout) for offline tests
of the MNIST code paths."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import torch
from infcore.mnist import mnist_raw_dir, mnist_raw_files


def write_idx(path: str | Path, array: torch.Tensor) -> None:
    """Write a uint8 tensor as a (gzipped, if ``path`` ends in .gz) IDX file."""
    path = Path(path)
    array = array.to(torch.uint8).contiguous()
    header = struct.pack(">I", 0x0800 | array.dim()) + b"".join(
        struct.pack(">I", s) for s in array.shape
    )
    payload = header + array.numpy().tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def write_fake_mnist(root: str | Path, n_train: int = 600, n_test: int = 100, seed: int = 0,
                     image_size: int = 28) -> list[Path]:
    """Write small MNIST-format files (gzipped IDX, torchvision layout) under ``root``.

    The images (``image_size`` square; MNIST's is 28) are class templates (a random pattern
    per digit) plus noise, so a
    linear model learns them but not perfectly. For offline tests of the MNIST code path.
    """
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(10, image_size, image_size, generator=g)

    def images(n):
        y = torch.randint(10, (n,), generator=g)
        x = 0.6 * templates[y] + 0.6 * torch.rand(n, image_size, image_size, generator=g)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y.to(torch.uint8)

    raw = mnist_raw_dir(root)
    xtr, ytr = images(n_train)
    xte, yte = images(n_test)
    write_idx(raw / "train-images-idx3-ubyte.gz", xtr)
    write_idx(raw / "train-labels-idx1-ubyte.gz", ytr)
    write_idx(raw / "t10k-images-idx3-ubyte.gz", xte)
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", yte)
    return mnist_raw_files(root)
