"""DRAFT helpers shared by the cnn_* rule scripts (data and device from the rule's settings)."""

import torch
from infcore import cnn


def device(settings) -> str:
    dev = settings["cnn"].get("device", "cpu")
    if dev == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config asks for cnn.device: cuda but no CUDA device is visible")
    return dev


def data(settings, mnist_root, dev):
    """The paper's MNIST subset on ``dev`` (float32)."""
    ds = settings["dataset"]
    d = cnn.load_small_mnist(mnist_root, fraction=ds.get("fraction", 0.1),
                             seed=ds.get("subset_seed", 0),
                             validation_size=ds.get("validation_size", 5000))
    return cnn.MnistSubset(d.x_train.to(dev), d.y_train.to(dev), d.x_test.to(dev),
                           d.y_test.to(dev), d.train_source)


def load_state(path, dev):
    st = torch.load(path, map_location=dev, weights_only=False)
    adam = cnn.AdamState(st["adam_m"], st["adam_v"], int(st["adam_step"]))
    return st["theta"], adam, st
