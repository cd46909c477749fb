"""Helpers shared by the cnn_* rule scripts: device, data and the trained state.

``params.settings`` of every CNN rule holds the model settings (dataset, l2, width, train,
device) plus the parts of the experiment that rule uses (workflow/rules/cnn.smk).
"""

import torch
from infcore import cnn
from infcore.data import load_small_mnist


def device(settings) -> str:
    dev = settings["device"]
    if dev == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config asks for cnn.device: cuda (or cnn_device: cuda) but no CUDA "
                           "device is visible")
    return dev


def data(settings, mnist_root, dev):
    """The paper's MNIST subset on ``dev`` (float32)."""
    ds = settings["dataset"]
    return load_small_mnist(mnist_root, fraction=ds["fraction"], seed=ds["subset_seed"],
                            validation_size=ds["validation_size"]).to(dev)


def save_state(res, path) -> None:
    import wfio

    wfio.save_torch({"theta": res.theta.cpu(), "adam_m": res.adam.m.cpu(), "adam_v": res.adam.v.cpu(),
                     "adam_step": int(res.adam.step), "global_step": int(res.global_step)}, path)


def load_state(path, dev):
    """(theta, Adam state, raw dict) of a cnn_train output, on ``dev``."""
    st = torch.load(str(path), map_location=dev, weights_only=True)
    adam = cnn.AdamState(st["adam_m"], st["adam_v"], int(st["adam_step"]))
    return st["theta"], adam, st
