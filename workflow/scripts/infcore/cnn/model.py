"""The CNN's model and flat parameter layout: All-CNN-C, its parameter vector, initialisation,
stacked forward passes and per-point losses (the protocol: :mod:`infcore.cnn`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CONTROL = -1
"""Removal index meaning "remove nothing" (the control run of :func:`retrain`)."""

PAPER = {
    "n_train_fraction": 0.1,
    "subset_seed": 0,
    "validation_size": 5000,
    "width": 8,
    "l2": 1e-3,
    "lr": 1e-4,
    "batch_size": 500,
    "train_steps": 500_000,
    "lr_decay_steps": (110_000, 220_000),
    "lr_decay_factors": (0.1, 0.01),
    "damping": 1e-2,
    "hvp_batch_size": 100,
    "test_index": 6558,
    "num_points": 100,
    "loo_steps": 30_000,
}
"""The paper's protocol as plain values (the defaults of the functions below)."""


def layer_specs(width: int = 8, in_channels: int = 1, n_classes: int = 10) -> list[tuple]:
    """Convolution layers as ``(in_channels, out_channels, kernel, stride)``.

    Args:
        width: channels of the five 3x3 convolutions (8 in the paper).
        in_channels: image channels.
        n_classes: channels of the 1x1 convolution and size of the linear layer.

    Returns:
        Six tuples; the linear layer ``n_classes x n_classes`` follows them.
    """
    return [
        (in_channels, width, 3, 1),
        (width, width, 3, 2),
        (width, width, 3, 1),
        (width, width, 3, 2),
        (width, width, 3, 1),
        (width, n_classes, 1, 1),
    ]


class AllCNNC(nn.Module):
    """All-CNN-C as in Koh & Liang's MNIST experiment.

    ``logits = W_fc mean_{h,w}(tanh(conv6(... tanh(conv1(x))))) + b_fc``, with the
    convolutions of :func:`layer_specs` (no padding). Parameter order (``named_parameters``)
    is the flat-vector layout used everywhere in this module: ``conv1.weight, conv1.bias,
    ..., conv6.weight, conv6.bias, fc.weight, fc.bias``.

    Args:
        width: channels of the hidden convolutions.
        in_channels: image channels.
        n_classes: number of classes.
    """

    def __init__(self, width: int = 8, in_channels: int = 1, n_classes: int = 10):
        super().__init__()
        self.specs = layer_specs(width, in_channels, n_classes)
        self.convs = nn.ModuleList(
            nn.Conv2d(ci, co, k, stride=s) for ci, co, k, s in self.specs
        )
        self.fc = nn.Linear(n_classes, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = torch.tanh(conv(x))
        return self.fc(x.mean(dim=(2, 3)))


def param_shapes(width: int = 8, in_channels: int = 1, n_classes: int = 10) -> list[tuple]:
    """Shapes of the parameters in flat-vector order (see :class:`AllCNNC`)."""
    shapes = []
    for ci, co, k, _ in layer_specs(width, in_channels, n_classes):
        shapes += [(co, ci, k, k), (co,)]
    shapes += [(n_classes, n_classes), (n_classes,)]
    return shapes


def num_params(width: int = 8, in_channels: int = 1, n_classes: int = 10) -> int:
    """Number of parameters (2,616 for the paper's model)."""
    return sum(math.prod(s) for s in param_shapes(width, in_channels, n_classes))


def weight_mask(width: int = 8, in_channels: int = 1, n_classes: int = 10,
                dtype=torch.float32, device=None) -> Tensor:
    """Flat 0/1 mask of the parameters the L2 term acts on (weights 1, biases 0)."""
    parts = [torch.full((math.prod(s),), float(len(s) > 1), dtype=dtype, device=device)
             for s in param_shapes(width, in_channels, n_classes)]
    return torch.cat(parts)


def split_params(theta: Tensor, width: int = 8, in_channels: int = 1,
                 n_classes: int = 10) -> list[Tensor]:
    """Views of a flat vector ``(dim,)`` or a stack ``(m, dim)`` as the parameter tensors.

    Args:
        theta: flat parameters; a leading model dimension is kept.

    Returns:
        List of tensors of shape ``(*lead, *shape)`` in :func:`param_shapes` order.
    """
    lead = theta.shape[:-1]
    shapes = param_shapes(width, in_channels, n_classes)
    sizes = [math.prod(s) for s in shapes]
    if theta.shape[-1] != sum(sizes):
        raise ValueError(f"theta has {theta.shape[-1]} entries, the model has {sum(sizes)}")
    parts = torch.split(theta, sizes, dim=-1)
    return [p.reshape(*lead, *s) for p, s in zip(parts, shapes, strict=True)]


def flatten_module(model: AllCNNC) -> Tensor:
    """The module's parameters as one flat (detached) vector."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def load_flat(model: AllCNNC, theta: Tensor) -> AllCNNC:
    """Copy a flat vector into the module's parameters (in place); returns the module."""
    with torch.no_grad():
        for p, v in zip(model.parameters(), split_params(theta, *_dims(model)), strict=True):
            p.copy_(v)
    return model


def _dims(model: AllCNNC) -> tuple[int, int, int]:
    ci, w = model.specs[0][0], model.specs[0][1]
    return w, ci, model.specs[-1][1]


def init_params(seed: int = 0, width: int = 8, in_channels: int = 1, n_classes: int = 10,
                dtype=torch.float32, device=None) -> Tensor:
    """The original initialisation as a flat vector.

    Convolution weights ~ truncated normal with std ``2/sqrt(k*k*c_in)``, the linear weights
    with std ``1/sqrt(n_classes)``, truncated at two standard deviations (TensorFlow's
    ``truncated_normal_initializer``); biases zero.

    Args:
        seed: seed of a CPU ``torch.Generator`` (same numbers on every device).
    """
    g = torch.Generator().manual_seed(seed)
    parts = []
    for s in param_shapes(width, in_channels, n_classes):
        if len(s) == 1:
            parts.append(torch.zeros(s, dtype=torch.float64))
            continue
        fan_in = math.prod(s[1:])
        std = 2.0 / math.sqrt(fan_in) if len(s) == 4 else 1.0 / math.sqrt(s[1])
        t = torch.empty(s, dtype=torch.float64)
        torch.nn.init.trunc_normal_(t, 0.0, 1.0, -2.0, 2.0, generator=g)
        parts.append((t * std).reshape(-1))
    return torch.cat([p.reshape(-1) for p in parts]).to(dtype=dtype, device=device)


def stacked_logits(theta: Tensor, x: Tensor, width: int = 8, in_channels: int = 1,
                   n_classes: int = 10, impl: str = "auto") -> Tensor:
    """Logits of m stacked networks on one shared input batch.

    Model j's convolution ``l`` has weights ``W_l[j]``. With ``impl="grouped"`` the m copies
    run as one convolution per layer with ``groups = m`` (the first layer, whose input is
    shared, as one convolution with ``m * width`` output channels): one kernel launch per
    layer, the fast choice on a GPU. ``impl="loop"`` runs the copies one after another on
    the shared batch (same math; on CPUs PyTorch's grouped convolution of these tiny
    channel counts is about 2x slower than m plain ones). ``"auto"``: grouped on CUDA, loop
    elsewhere. Both equal running :class:`AllCNNC` m times.

    Args:
        theta: ``(m, dim)`` stacked flat parameters (or ``(dim,)`` for one model).
        x: ``(B, in_channels, H, W)`` inputs shared by all models, or ``(m, B, in_channels,
            H, W)``: one batch per model.
        impl: ``"grouped"``, ``"loop"`` or ``"auto"``.

    Returns:
        ``(m, B, n_classes)`` logits (``(B, n_classes)`` if theta is 1-D).
    """
    single = theta.dim() == 1
    if single:
        theta = theta.unsqueeze(0)
    m = theta.shape[0]
    ps = split_params(theta, width, in_channels, n_classes)
    specs = layer_specs(width, in_channels, n_classes)
    if impl == "auto":
        impl = "grouped" if x.is_cuda else "loop"
    per_model = x.dim() == 5
    B = x.shape[1] if per_model else x.shape[0]
    if impl == "loop" or m == 1:
        outs = []
        for j in range(m):
            h = x[j] if per_model else x
            for li, (_, _, _, stride) in enumerate(specs):
                h = torch.tanh(F.conv2d(h, ps[2 * li][j], ps[2 * li + 1][j], stride=stride))
            outs.append(F.linear(h.mean(dim=(2, 3)), ps[-2][j], ps[-1][j]))
        out = torch.stack(outs)
    elif impl == "grouped":
        h = x.transpose(0, 1).reshape(B, m * x.shape[2], *x.shape[3:]) if per_model else x
        for li, (_, co, _, stride) in enumerate(specs):
            w, b = ps[2 * li], ps[2 * li + 1]
            w = w.reshape(m * co, *w.shape[2:])
            h = torch.tanh(F.conv2d(h, w, b.reshape(m * co), stride=stride,
                                    groups=1 if li == 0 and not per_model else m))
        h = h.mean(dim=(2, 3)).reshape(B, m, n_classes)
        out = torch.einsum("bmi,moi->mbo", h, ps[-2]) + ps[-1].unsqueeze(1)
    else:
        raise ValueError(f"impl must be 'grouped', 'loop' or 'auto', not {impl!r}")
    return out[0] if single else out


def example_losses(theta: Tensor, x: Tensor, y: Tensor, width: int = 8, in_channels: int = 1,
                   n_classes: int = 10, chunk: int = 2000) -> Tensor:
    """Unregularised CE per point: ``(n_points,)`` for ``(dim,)``, ``(m, n_points)`` for a stack."""
    outs = []
    with torch.no_grad():
        for s in range(0, x.shape[0], chunk):
            lg = stacked_logits(theta, x[s:s + chunk], width, in_channels, n_classes)
            yy = y[s:s + chunk]
            if lg.dim() == 2:
                outs.append(F.cross_entropy(lg, yy, reduction="none"))
            else:
                m, B, C = lg.shape
                outs.append(F.cross_entropy(lg.reshape(m * B, C), yy.repeat(m),
                                            reduction="none").reshape(m, B))
    return torch.cat(outs, dim=-1)


def accuracy(theta: Tensor, x: Tensor, y: Tensor, width: int = 8, chunk: int = 2000) -> float:
    """Share of correctly classified points for one model ``(dim,)``."""
    correct = 0
    with torch.no_grad():
        for s in range(0, x.shape[0], chunk):
            lg = stacked_logits(theta, x[s:s + chunk], width)
            correct += (lg.argmax(-1) == y[s:s + chunk]).sum().item()
    return correct / x.shape[0]
