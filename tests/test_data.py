"""infcore.data: IDX files, MNIST from its .gz files (offline, on fake files), random data."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_mnist import write_fake_mnist, write_idx
from infcore.data import (
    Dataset,
    load_mnist,
    load_small_mnist,
    make_dataset,
    make_random,
    small_mnist_indices,
)
from infcore.mnist import MNIST_FILES, mnist_counts, mnist_raw_files, read_idx_count

SHARED_MNIST = Path(os.environ.get("INFCORE_MNIST_RAW", "/work/shared/data/MNIST/raw"))


def test_idx_roundtrip(tmp_path):
    a = torch.randint(0, 256, (7, 4, 3), dtype=torch.uint8)
    write_idx(tmp_path / "a.gz", a)
    write_idx(tmp_path / "a", a)
    assert read_idx_count(tmp_path / "a.gz") == read_idx_count(tmp_path / "a") == 7
    raw = gzip.open(tmp_path / "a.gz").read()
    assert raw[:4] == b"\x00\x00\x08\x03" and raw[16:] == a.numpy().tobytes()
    (tmp_path / "bad").write_bytes(b"\x00\x00\x09\x01\x00\x00\x00\x01")
    with pytest.raises(ValueError, match="not an unsigned-byte IDX"):
        read_idx_count(tmp_path / "bad")


@pytest.fixture
def fake_root(tmp_path):
    write_fake_mnist(tmp_path, n_train=120, n_test=30, seed=1)
    return tmp_path


def test_mnist_counts_from_headers(fake_root, tmp_path_factory):
    assert mnist_counts(fake_root) == (120, 30)
    assert mnist_counts(tmp_path_factory.mktemp("empty")) is None


def test_load_mnist_offline_on_fake_files(fake_root):
    ds = load_mnist(fake_root, validation_size=20)
    assert (ds.n_train, ds.n_test, ds.n_features, ds.n_classes) == (100, 30, 784, 10)
    assert ds.X_train.dtype == torch.float64 and ds.y_train.dtype == torch.int64
    assert 0.0 <= float(ds.X_train.min()) and float(ds.X_train.max()) <= 1.0
    # training set = images after the first validation_size, pixels / 255, row-major
    with gzip.open(fake_root / "MNIST/raw/train-images-idx3-ubyte.gz") as f:
        pixels = torch.frombuffer(bytearray(f.read()[16:]), dtype=torch.uint8).reshape(120, 784)
    assert torch.equal(ds.X_train, pixels[20:].double() / 255.0)
    assert ds.info["canonical_files"] is False and ds.info["train_range"] == [20, 120]
    assert set(ds.info["files_md5"]) == set(MNIST_FILES)
    # max_train / max_test keep the first points
    small = load_mnist(fake_root, validation_size=20, max_train=10, max_test=5)
    assert torch.equal(small.X_train, ds.X_train[:10]) and torch.equal(small.y_test, ds.y_test[:5])
    with pytest.raises(ValueError, match="validation_size"):
        load_mnist(fake_root, validation_size=120)


def test_fake_mnist_is_learnable_but_not_trivial(fake_root):
    ds = load_mnist(fake_root, validation_size=0)
    counts = torch.bincount(ds.y_train, minlength=10)
    assert (counts > 0).sum() >= 8


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="real MNIST files not available")
def test_load_real_mnist_paper_split(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for p in mnist_raw_files(SHARED_MNIST.parents[1]):
        shutil.copy(p, raw / p.name)
    ds = load_mnist(tmp_path)
    assert (ds.n_train, ds.n_test, ds.n_features) == (55000, 10000, 784)
    assert ds.info["canonical_files"] is True
    assert torch.bincount(ds.y_test).tolist()[:3] == [980, 1135, 1032]


def test_small_mnist_indices_reproduce_original_numpy_draw():
    idx = small_mnist_indices()
    assert idx.shape == (5500,) and len(set(idx.tolist())) == 5500
    np.random.seed(0)
    perm = np.arange(55000)
    np.random.shuffle(perm)
    assert np.array_equal(idx.numpy(), perm[:5500])


def test_load_small_mnist_offline_on_fake_files(fake_root):
    d = load_small_mnist(fake_root, fraction=0.5, seed=3, validation_size=20)
    src = small_mnist_indices(100, 0.5, 3) + 20
    assert d.x_train.shape == (50, 1, 28, 28) and d.x_test.shape == (30, 1, 28, 28)
    assert torch.equal(d.train_source, src) and d.x_train.dtype == torch.float32
    with gzip.open(fake_root / "MNIST/raw/train-images-idx3-ubyte.gz") as f:
        pixels = torch.frombuffer(bytearray(f.read()[16:]), dtype=torch.uint8).reshape(120, 1, 28, 28)
    assert torch.equal(d.x_train, pixels[src].float() / 255.0)
    moved = d.to("cpu")
    assert torch.equal(moved.y_train, d.y_train) and moved.train_source is d.train_source


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="real MNIST files not available")
def test_load_small_mnist_real_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for p in mnist_raw_files(SHARED_MNIST.parents[1]):  # a private copy: the loader unpacks next to them
        shutil.copy(p, raw / p.name)
    d = load_small_mnist(tmp_path)
    assert d.x_train.shape == (5500, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert d.x_train.dtype == torch.float32 and 0 <= float(d.x_train.min())
    assert float(d.x_train.max()) <= 1.0
    assert int(d.train_source.min()) >= 5000
    assert len(torch.unique(d.y_train)) == 10


def test_make_random_shapes_and_determinism():
    a = make_random(6, 3, 50, 20, seed=5)
    b = make_random(6, 3, 50, 20, seed=5)
    c = make_random(6, 3, 50, 20, seed=6)
    assert (a.n_train, a.n_test, a.n_features, a.n_classes) == (50, 20, 6, 3)
    assert torch.equal(a.X_train, b.X_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.X_train, c.X_train)
    assert a.X_train.dtype == torch.float64 and int(a.y_train.max()) < 3


def test_random_labels_follow_the_teacher():
    clean = make_random(10, 4, 3000, 10, seed=0, teacher_scale=3.0, labels="argmax")
    assert clean.info["teacher_accuracy"] == 1.0
    soft = make_random(10, 4, 3000, 10, seed=0, teacher_scale=3.0, labels="softmax")
    assert 0.5 < soft.info["teacher_accuracy"] < 1.0  # noisy but far above chance (0.25)
    noisy = make_random(10, 4, 3000, 10, seed=0, labels="argmax", label_noise=1.0)
    assert abs(noisy.info["teacher_accuracy"] - 0.25) < 0.05  # every label redrawn uniformly
    x = make_random(10, 4, 3000, 10, seed=0, input_std=0.5).X_train
    assert abs(float(x.std()) - 0.5) < 0.02
    with pytest.raises(ValueError):
        make_random(3, 2, 10, 5, labels="bogus")


def test_make_dataset_and_serialization(tmp_path, fake_root):
    ds = make_dataset({"kind": "random", "n_features": 4, "n_classes": 2, "n_train": 30, "n_test": 10, "seed": 2})
    torch.save(ds.to_dict(), tmp_path / "d.pt")
    back = Dataset.from_dict(torch.load(tmp_path / "d.pt", weights_only=True))
    assert torch.equal(back.X_train, ds.X_train) and back.n_classes == 2
    info = ds.describe()
    json.dumps(info)  # JSON-able
    assert info["train_class_counts"] == torch.bincount(ds.y_train, minlength=2).tolist()
    m = make_dataset({"kind": "mnist", "validation_size": 10, "max_train": None, "max_test": 7}, mnist_root=fake_root)
    assert (m.n_train, m.n_test) == (110, 7)
    with pytest.raises(ValueError, match="mnist_root"):
        make_dataset({"kind": "mnist"})
