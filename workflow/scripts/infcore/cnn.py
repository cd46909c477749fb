"""The CNN of Figure 2 (right panel): All-CNN-C on 10% of MNIST, influence and LOO retraining.

Everything CNN-specific lives here; nothing here knows about Snakemake or files (except
:func:`load_small_mnist`, which reads the raw MNIST files through torchvision).

Protocol (Koh & Liang 2017, ``influence-release/scripts/train_mnist.py``):

* Data: the 55,000 MNIST training images after the first 5,000 (validation); a random 10%
  of them (``np.random.seed(0); np.random.shuffle(arange(55000))[:5500]``), n = 5,500;
  pixels / 255, images ``1 x 28 x 28``. The test set is the usual 10,000 images.
* Model (:class:`AllCNNC`, 2,616 parameters at width 8): five 3x3 convolutions with 8
  channels, strides 1, 2, 1, 2, 1, no padding, tanh; a 1x1 convolution to 10 channels, tanh;
  global average pooling; a 10x10 linear layer with bias. Initialisation as in the original:
  truncated normal weights (std ``2/sqrt(fan_in)`` for convolutions, ``1/sqrt(10)`` for the
  linear layer, truncated at two standard deviations), zero biases.
* Objective: ``L(theta) = (1/n) sum_i CE_i(theta) + (l2/2) ||w||^2`` with ``l2 = 0.001`` on
  the weights only (not on the biases).
* Training: Adam (TensorFlow 1 form, see :func:`adam_update`), learning rate ``1e-4``,
  batch 500, 500k steps, learning rate x0.1 from step 110k and x0.01 from step 220k.
* Influence: ``s = (H + lambda I)^{-1} g_test`` by CG with ``lambda = 0.01``; ``H`` is the
  Hessian of ``L`` over all n points, computed in minibatches of 100 (double backward) and
  averaged; ``g_test`` is the gradient of the unregularised loss on test point 6558;
  ``pred_i = (1/n) g_i^T s`` with ``g_i`` the gradient of point i's regularised loss
  ``CE_i + (l2/2)||w||^2``. ``pred_i`` predicts ``L_test(theta_-i) - L_test(theta_hat)``.
* LOO: the 100 points with the largest ``|pred_i|``; for each, continue training from the
  final parameters and Adam state for 30,000 steps without the point, at the learning rate the
  schedule had reached (1e-6 after 500k steps; the original restores its TensorFlow
  checkpoint, which holds the learning-rate variable and Adam's moments).

What we add (see ``docs/cnn.md``):

* A *control*: the same continued training with no point removed, on the very same
  minibatch stream. Minibatches are drawn once from epoch permutations of all n points
  (seeded); a run that removes point i uses the same minibatches with i masked out (its
  weight set to zero and the batch mean taken over the remaining points). Averaged over the
  sampling, each remaining point has weight ``1/(n-1)``, so the masked gradient is an
  unbiased estimate of the LOO objective's gradient. Removal index ``-1`` (:data:`CONTROL`)
  means "remove nothing".
* Batched LOO retraining: the m runs of a call are trained in one program as m stacked
  copies of the network (grouped convolutions), each with its own Adam state.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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


# --------------------------------------------------------------------------------------------
# Model and parameter layout
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


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

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    train_source: Tensor


def small_mnist_indices(num_train: int = 55_000, fraction: float = 0.1,
                        seed: int = 0) -> Tensor:
    """Indices (into the 55,000 non-validation images) of the original 10% subset.

    Reproduces ``np.random.seed(0); perm = arange(55000); np.random.shuffle(perm);
    perm[:5500]`` of ``load_small_mnist`` exactly.
    """
    import numpy as np

    perm = np.arange(num_train)
    np.random.RandomState(seed).shuffle(perm)
    return torch.from_numpy(perm[: int(num_train * fraction)].copy())


def load_small_mnist(root: str, fraction: float = 0.1, seed: int = 0,
                     validation_size: int = 5000, download: bool = False) -> MnistSubset:
    """Load MNIST through torchvision and take the paper's subset.

    Args:
        root: torchvision root (holds ``MNIST/raw/*.gz``).
        fraction: share of the 55,000 training images kept (0.1).
        seed: numpy seed of the subset (0).
        validation_size: leading training images held out as validation (5,000).
        download: passed to torchvision (files already present are read offline).
    """
    from torchvision.datasets import MNIST

    tr = MNIST(root=root, train=True, download=download)
    te = MNIST(root=root, train=False, download=download)
    idx = small_mnist_indices(len(tr.targets) - validation_size, fraction, seed)
    src = idx + validation_size
    x_train = (tr.data[src].float() / 255.0).unsqueeze(1)
    x_test = (te.data.float() / 255.0).unsqueeze(1)
    return MnistSubset(x_train, tr.targets[src].long(), x_test, te.targets.long(), src)


# --------------------------------------------------------------------------------------------
# Training (main run, control and LOO share one code path)
# --------------------------------------------------------------------------------------------


def lr_at(step: int, lr: float = 1e-4, decay_steps: Sequence[int] = (110_000, 220_000),
          decay_factors: Sequence[float] = (0.1, 0.01)) -> float:
    """Learning rate of the schedule at (0-based) step ``step``.

    ``lr * decay_factors[k]`` from ``decay_steps[k]`` on (the original decays at epochs
    10,000 and 20,000 of 11 steps each).
    """
    mult = 1.0
    for s, f in zip(decay_steps, decay_factors, strict=True):
        if step >= s:
            mult = f
    return lr * mult


def batch_stream(n: int, batch_size: int, steps: int, seed: int, start_step: int = 0,
                 exclude: int = -1):
    """Deterministic minibatch indices: consecutive slices of seeded epoch permutations.

    Each epoch is a fresh permutation of ``range(n)`` from a CPU generator seeded with
    ``seed``; a batch that would run past the end of the permutation starts a new epoch
    (the tail is skipped, as in the original ``DataSet.next_batch``). The stream depends only
    on ``(n, batch_size, seed)``, so all runs that share them see the same minibatches.

    Args:
        n: number of points.
        batch_size: points per batch (at most n).
        steps: number of batches to yield.
        seed: generator seed.
        start_step: skip this many batches first (to resume a stream).
        exclude: a point left out of the pool (the stream is then over the n-1 others, like
            the original's ``DataSet`` of the LOO training set); -1: none.

    Yields:
        ``(batch_size,)`` int64 CPU tensors.
    """
    pool = torch.arange(n)
    if exclude >= 0:
        pool = pool[pool != exclude]
    if not 0 < batch_size <= pool.numel():
        raise ValueError(f"batch_size {batch_size} must be in [1, {pool.numel()}]")
    g = torch.Generator().manual_seed(seed)
    per_epoch = pool.numel() // batch_size
    perm, pos, k = None, per_epoch, 0
    while k < start_step + steps:
        if pos == per_epoch:
            perm, pos = torch.randperm(pool.numel(), generator=g), 0
            if exclude >= 0:
                perm = pool[perm]
        if k >= start_step:
            yield perm[pos * batch_size:(pos + 1) * batch_size]
        pos += 1
        k += 1


def run_seed(seed: int, removed: int) -> int:
    """Seed of the independent minibatch stream of the run that removes ``removed``."""
    return (seed * 1_000_003 + removed + 1) % (2**63 - 1)


@dataclass
class AdamState:
    """Adam's state for m stacked models.

    Attributes:
        m: ``(m, dim)`` first moments.
        v: ``(m, dim)`` second moments.
        step: number of updates taken so far (shared; bias correction uses ``step``).
    """

    m: Tensor
    v: Tensor
    step: int = 0

    @classmethod
    def zeros_like(cls, theta: Tensor) -> AdamState:
        return cls(torch.zeros_like(theta), torch.zeros_like(theta), 0)

    def expand(self, k: int) -> AdamState:
        """Repeat a one-model state ``(1, dim)`` or ``(dim,)`` for k models."""
        m, v = self.m.reshape(1, -1), self.v.reshape(1, -1)
        return AdamState(m.repeat(k, 1), v.repeat(k, 1), self.step)

    def to(self, **kw) -> AdamState:
        return AdamState(self.m.to(**kw), self.v.to(**kw), self.step)


def adam_update(theta: Tensor, grad: Tensor, state: AdamState, lr: float,
                beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
    """One Adam step in TensorFlow 1's form (``tf.train.AdamOptimizer``), in place.

    With ``t = step + 1``::

        m <- beta1 m + (1 - beta1) g
        v <- beta2 v + (1 - beta2) g^2
        theta <- theta - lr_t m / (sqrt(v) + eps),   lr_t = lr sqrt(1 - beta2^t) / (1 - beta1^t)

    Elementwise, so a stack of models is updated exactly as each model alone.
    """
    t = state.step + 1
    state.m.mul_(beta1).add_(grad, alpha=1 - beta1)
    state.v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    lr_t = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
    theta.addcdiv_(state.m, state.v.sqrt().add_(eps), value=-lr_t)
    state.step = t


def _masked_objective(theta: Tensor, xb: Tensor, yb: Tensor, bidx: Tensor, remove: Tensor,
                      l2: float, wmask: Tensor, dims: tuple, impl: str = "auto") -> Tensor:
    """Sum over models of each model's minibatch objective with its removed point masked.

    Model j's objective on batch b: ``sum_{k in b, k != r_j} CE_k / |{k in b : k != r_j}|
    + (l2/2) ||w_j||^2``; ``r_j = -1`` masks nothing. ``bidx (B,)`` is one batch shared by
    all models, ``bidx (m, B)`` one batch per model (``xb``, ``yb`` likewise).
    """
    logits = stacked_logits(theta, xb, *dims, impl=impl)  # (m, B, C)
    m, B, C = logits.shape
    yy = yb.reshape(-1) if yb.dim() == 2 else yb.repeat(m)
    ce = F.cross_entropy(logits.reshape(m * B, C), yy, reduction="none").reshape(m, B)
    keep = (bidx.reshape(-1, B) != remove.unsqueeze(1)).to(ce.dtype)
    data = (ce * keep).sum(1) / keep.sum(1)
    reg = 0.5 * l2 * ((theta * wmask) ** 2).sum(1)
    return (data + reg).sum()


@dataclass
class TrainResult:
    """Result of :func:`train` / :func:`retrain`.

    Attributes:
        theta: ``(m, dim)`` final parameters (``(dim,)`` from :func:`train`).
        adam: final Adam state.
        steps: number of steps taken in this call.
        global_step: schedule position after the call (start_step + steps).
        removed: ``(m,)`` removed index per run (``-1`` = control); empty for :func:`train`.
        eval_losses: ``(m, n_eval)`` unregularised CE on the evaluation points at the end
            (``None`` without evaluation points).
        trace: ``(step, mean objective over models)`` every ``log_every`` steps.
        seconds: wall time.
    """

    theta: Tensor
    adam: AdamState
    steps: int
    global_step: int
    removed: Tensor
    eval_losses: Tensor | None
    trace: list = field(default_factory=list)
    seconds: float = 0.0


def _run(theta: Tensor, adam: AdamState, x: Tensor, y: Tensor, remove: Tensor, steps: int,
         batch_size: int, seed: int, lr_fn: Callable[[int], float], l2: float, dims: tuple,
         start_step: int, stream_offset: int, log_every: int,
         progress: Callable[[int, int, str], None] | None, impl: str = "auto",
         independent: bool = False) -> list:
    wmask = weight_mask(*dims, dtype=theta.dtype, device=theta.device)
    dev = x.device
    trace = []
    n = x.shape[0]
    if independent:
        streams = [batch_stream(n, batch_size, steps, run_seed(seed, r), stream_offset, r)
                   for r in remove.tolist()]
        batches = (torch.stack(bs) for bs in zip(*streams, strict=True))
    else:
        batches = batch_stream(n, batch_size, steps, seed, stream_offset)
    for k, bidx in enumerate(batches):
        bidx_d = bidx.to(dev)
        theta.requires_grad_(True)
        obj = _masked_objective(theta, x[bidx_d], y[bidx_d], bidx_d, remove, l2, wmask, dims,
                                impl)
        (g,) = torch.autograd.grad(obj, theta)
        theta.requires_grad_(False)
        with torch.no_grad():
            adam_update(theta, g, adam, lr_fn(start_step + k))
        if log_every and ((k + 1) % log_every == 0 or k + 1 == steps):
            val = obj.item() / theta.shape[0]
            trace.append((start_step + k + 1, val))
            if progress is not None:
                progress(k + 1, steps, f"objective {val:.6f}")
    return trace


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


def train(x: Tensor, y: Tensor, steps: int, theta0: Tensor | None = None,
          adam0: AdamState | None = None, start_step: int = 0, batch_size: int = 500,
          lr: float = 1e-4, decay_steps: Sequence[int] = (110_000, 220_000),
          decay_factors: Sequence[float] = (0.1, 0.01), l2: float = 1e-3, seed: int = 0,
          init_seed: int = 0, width: int = 8, log_every: int = 1000,
          progress: Callable[[int, int, str], None] | None = None,
          impl: str = "auto") -> TrainResult:
    """Train one network with Adam on minibatches, minimising ``L(theta)``.

    ``L(theta) = (1/n) sum_i CE_i(theta) + (l2/2) ||w||^2``; at step t (global, 0-based)
    the minibatch is batch ``t`` of :func:`batch_stream` ``(n, batch_size, seed)`` and the
    learning rate is :func:`lr_at` ``(t)``. Runs on the device and dtype of ``x``.

    Args:
        x: ``(n, 1, 28, 28)`` training images (on the target device).
        y: ``(n,)`` labels.
        steps: steps to take in this call (500,000 in the paper).
        theta0: initial flat parameters; default :func:`init_params` ``(init_seed)``.
        adam0: Adam state to resume from; default zeros.
        start_step: global step of the first step (to resume; also offsets the batch stream).
        batch_size, lr, decay_steps, decay_factors, l2: the protocol (paper defaults).
        seed: seed of the minibatch stream.
        init_seed: seed of the initialisation.
        width: hidden channels.
        log_every: record (and report through ``progress``) the objective every so many steps.
        progress: optional ``progress(done, total, message)``.
        impl: forward implementation (see :func:`stacked_logits`).

    Returns:
        :class:`TrainResult` with ``theta`` of shape ``(dim,)``.
    """
    t0 = time.perf_counter()
    dims = (width, x.shape[1], 10)
    if theta0 is None:
        theta0 = init_params(init_seed, *dims, dtype=x.dtype, device=x.device)
    theta = theta0.detach().reshape(1, -1).to(dtype=x.dtype, device=x.device).clone()
    adam = (AdamState.zeros_like(theta) if adam0 is None
            else adam0.expand(1).to(dtype=x.dtype, device=x.device))
    remove = torch.full((1,), CONTROL, dtype=torch.long, device=x.device)
    trace = _run(theta, adam, x, y, remove, steps, batch_size, seed,
                 lambda t: lr_at(t, lr, decay_steps, decay_factors), l2, dims, start_step,
                 start_step, log_every, progress, impl)
    return TrainResult(theta[0], AdamState(adam.m[0], adam.v[0], adam.step), steps,
                       start_step + steps, torch.empty(0, dtype=torch.long), None, trace,
                       time.perf_counter() - t0)


def retrain(theta_hat: Tensor, adam_hat: AdamState | None, x: Tensor, y: Tensor,
            remove: Sequence[int], steps: int, lr: float, batch_size: int = 500,
            l2: float = 1e-3, seed: int = 1, start_step: int = 0, width: int = 8,
            x_eval: Tensor | None = None, y_eval: Tensor | None = None,
            chunk: int | None = None, log_every: int = 0,
            progress: Callable[[int, int, str], None] | None = None,
            impl: str = "auto", streams: str = "shared") -> TrainResult:
    """Continue training from ``theta_hat`` without one point, for many points at once.

    Run j continues Adam from ``(theta_hat, adam_hat)`` for ``steps`` steps at the constant
    learning rate ``lr`` on the minibatches of :func:`batch_stream` ``(n, batch_size, seed)``
    with point ``remove[j]`` masked out: its minibatch objective is
    ``sum_{k in b, k != r_j} CE_k / |{k in b, k != r_j}| + (l2/2)||w||^2``. ``remove[j] = -1``
    (:data:`CONTROL`) is the control, which removes nothing; every run, in any call or
    chunk, sees the same minibatches, so ``L(theta_-i) - L(theta_control)`` measures the
    removal alone, not the drift of continued training.

    The runs of a chunk are m stacked networks trained as one program: one forward of the
    stack per step (grouped convolutions on GPU, see :func:`stacked_logits`), one backward,
    one elementwise Adam update of the ``(m, dim)`` stack (so one Adam state per run); a
    run's result does not depend on which other runs share its call (up to floating-point
    reduction order), so shards may split ``remove`` freely.

    Args:
        theta_hat: ``(dim,)`` parameters at the end of training.
        adam_hat: Adam state at the end of training (``None``: fresh zeros, step 0).
        x, y: the full training set (n points; the removed point stays in it, masked).
        remove: training indices to remove, one run each; ``-1`` for the control.
        steps: continued steps (30,000 in the paper).
        lr: constant learning rate (the paper: the schedule's final value, 1e-6).
        batch_size, l2: as in training.
        seed: seed of the continued minibatch stream (shared by all runs).
        start_step: offset into that stream (0 = its start).
        width: hidden channels.
        x_eval, y_eval: points whose unregularised loss is returned per run (the test point).
        chunk: at most this many runs per program (memory); ``None`` = all at once.
        log_every: record the mean objective every so many steps (0 = never).
        progress: optional ``progress(done, total, message)``; called per chunk.
        impl: forward implementation of the stack (see :func:`stacked_logits`).
        streams: ``"shared"`` (above) or ``"independent"``: run j draws its own minibatches
            from epoch permutations of the n-1 points without ``remove[j]`` (all n for the
            control), seeded by :func:`run_seed` ``(seed, remove[j])`` -- the original
            protocol's situation, where each LOO run had its own shuffles, so the drift of
            continued training differs from run to run.

    Returns:
        :class:`TrainResult` with ``theta (m, dim)``, ``removed (m,)`` and
        ``eval_losses (m, n_eval)`` in the order of ``remove``.
    """
    t0 = time.perf_counter()
    dims = (width, x.shape[1], 10)
    n = x.shape[0]
    if streams not in ("shared", "independent"):
        raise ValueError(f"streams must be 'shared' or 'independent', not {streams!r}")
    rem = torch.as_tensor(list(remove), dtype=torch.long)
    if ((rem < -1) | (rem >= n)).any():
        raise ValueError(f"removal indices must be -1 or in [0, {n})")
    m = rem.numel()
    chunk = m if not chunk else chunk
    thetas, ms, vs, trace = [], [], [], []
    theta_hat = theta_hat.detach().reshape(1, -1).to(dtype=x.dtype, device=x.device)
    base = (AdamState.zeros_like(theta_hat) if adam_hat is None
            else adam_hat.to(dtype=x.dtype, device=x.device))
    step_out = base.step
    for c0 in range(0, m, chunk):
        r = rem[c0:c0 + chunk].to(x.device)
        theta = theta_hat.repeat(r.numel(), 1)
        adam = base.expand(r.numel())
        tr = _run(theta, adam, x, y, r, steps, batch_size, seed, lambda t: lr, l2, dims,
                  start_step, start_step, log_every, None, impl, streams == "independent")
        thetas.append(theta)
        ms.append(adam.m)
        vs.append(adam.v)
        trace.append(tr)
        step_out = adam.step
        if progress is not None:
            progress(min(c0 + chunk, m), m, f"chunk of {r.numel()} runs done")
    theta = torch.cat(thetas)
    ev = None
    if x_eval is not None:
        ev = example_losses(theta, x_eval, y_eval, *dims)
    return TrainResult(theta, AdamState(torch.cat(ms), torch.cat(vs), step_out), steps,
                       start_step + steps, rem, ev, trace, time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------
# Influence
# --------------------------------------------------------------------------------------------


def objective(theta: Tensor, x: Tensor, y: Tensor, l2: float = 1e-3, width: int = 8) -> Tensor:
    """``L(theta) = mean_i CE_i(theta) + (l2/2)||w||^2`` for one model (differentiable)."""
    dims = (width, x.shape[1], 10)
    ce = F.cross_entropy(stacked_logits(theta, x, *dims), y)
    return ce + 0.5 * l2 * ((theta * weight_mask(*dims, dtype=theta.dtype,
                                                  device=theta.device)) ** 2).sum()


def loss_grad(theta: Tensor, x: Tensor, y: Tensor, width: int = 8) -> Tensor:
    """Gradient of the unregularised mean CE on ``(x, y)`` (``g_test`` for test points)."""
    th = theta.detach().requires_grad_(True)
    ce = F.cross_entropy(stacked_logits(th, x, width, x.shape[1], 10), y)
    return torch.autograd.grad(ce, th)[0]


def make_hvp(theta: Tensor, x: Tensor, y: Tensor, l2: float = 1e-3, batch_size: int = 100,
             width: int = 8) -> Callable[[Tensor], Tensor]:
    """Hessian-vector products of the training objective by double backward.

    ``H v = sum_b (|b|/n) nabla^2 [mean_{i in b} CE_i](theta) v + l2 * mask * v`` over
    consecutive batches b of ``batch_size`` points: the full-data Hessian of ``L``, computed
    in minibatches and averaged with weights ``|b|/n`` (the paper: batches of 100, which
    divide n = 5,500, so the weights are equal). Each batch term is
    ``d/dtheta [ (d/dtheta mean CE) . v ]``.

    Args:
        theta: ``(dim,)`` parameters (their dtype is used; float64 recommended).
        x, y: training points (same device and dtype as theta).
        l2: L2 coefficient on the weights.
        batch_size: points per double-backward pass.
        width: hidden channels.

    Returns:
        ``matvec(v)`` for ``v`` of shape ``(dim,)``: ``H v`` without damping.
    """
    dims = (width, x.shape[1], 10)
    n = x.shape[0]
    th = theta.detach().clone()
    wmask = weight_mask(*dims, dtype=th.dtype, device=th.device)

    def matvec(v: Tensor) -> Tensor:
        out = l2 * wmask * v
        for s in range(0, n, batch_size):
            xb, yb = x[s:s + batch_size], y[s:s + batch_size]
            p = th.clone().requires_grad_(True)
            ce = F.cross_entropy(stacked_logits(p, xb, *dims), yb)
            (g,) = torch.autograd.grad(ce, p, create_graph=True)
            (hv,) = torch.autograd.grad(g @ v, p)
            out = out + hv * (xb.shape[0] / n)
        return out.detach()

    return matvec


def train_point_dots(theta: Tensor, s: Tensor, x: Tensor, y: Tensor, l2: float = 1e-3,
                     width: int = 8, chunk: int = 1000) -> Tensor:
    """``g_i . s`` for every training point, by one forward-mode pass (JVP) per chunk.

    ``g_i = nabla [CE_i + (l2/2)||w||^2]``, so ``g_i . s = d/de CE_i(theta + e s)|_{e=0}
    + l2 (mask * theta) . s``; the first term for all i is the JVP of the per-point losses.

    Returns:
        ``(n,)`` tensor.
    """
    dims = (width, x.shape[1], 10)
    th, s = theta.detach(), s.detach().to(theta.dtype)
    reg = l2 * ((th * weight_mask(*dims, dtype=th.dtype, device=th.device)) @ s)
    outs = []
    for c in range(0, x.shape[0], chunk):
        xb, yb = x[c:c + chunk], y[c:c + chunk]

        def f(p, xb=xb, yb=yb):
            return F.cross_entropy(stacked_logits(p, xb, *dims), yb, reduction="none")

        _, tang = torch.func.jvp(f, (th,), (s,))
        outs.append(tang)
    return torch.cat(outs) + reg


def per_example_grads(theta: Tensor, x: Tensor, y: Tensor, l2: float = 1e-3,
                      width: int = 8) -> Tensor:
    """``(m, dim)`` gradients of each point's regularised loss (small m; for tests)."""
    dims = (width, x.shape[1], 10)
    th = theta.detach()
    wmask = weight_mask(*dims, dtype=th.dtype, device=th.device)

    def f(p, xi, yi):
        ce = F.cross_entropy(stacked_logits(p, xi.unsqueeze(0), *dims), yi.unsqueeze(0))
        return ce + 0.5 * l2 * ((p * wmask) ** 2).sum()

    return torch.func.vmap(torch.func.grad(f), in_dims=(None, 0, 0))(th, x, y)


class CurvatureMonitor:
    """Wraps a matvec and records the curvature ``v.(A v)/||v||^2`` of every vector it sees.

    CG applies the operator to its search directions; a non-positive curvature means the
    quadratic ``x.A x/2 - b.x`` is not bounded below along that direction: CG's derivation
    (and its minimisation property) is void there, whatever the residual does. With
    ``damping`` the recorded curvature is that of ``A + damping I``.

    Attributes:
        curvatures: one value per call.
    """

    def __init__(self, matvec: Callable[[Tensor], Tensor], damping: float = 0.0):
        self.matvec, self.damping, self.curvatures = matvec, damping, []

    def __call__(self, v: Tensor) -> Tensor:
        hv = self.matvec(v)
        nv = (v @ v).item()
        if nv > 0:
            self.curvatures.append((v @ hv).item() / nv + self.damping)
        return hv

    @property
    def min_curvature(self) -> float:
        return min(self.curvatures) if self.curvatures else float("nan")


@dataclass
class InfluenceResult:
    """Result of :func:`influence`.

    Attributes:
        pred: ``(n,)`` predicted ``L_test(theta_-i) - L_test(theta_hat)`` for every point.
        s: ``(dim,)`` ``(H + lambda I)^{-1} g_test`` (CG's answer).
        g_test: ``(dim,)`` gradient of the test loss.
        test_loss: unregularised test loss at theta.
        cg: the solver's result (``x``, ``iterations``, ``residuals``, ``converged``, ...).
        min_curvature: smallest ``p.(H + lambda I)p/||p||^2`` CG met (<= 0: not PD there).
        hvp_seconds: mean seconds per HVP.
        seconds: wall time.
    """

    pred: Tensor
    s: Tensor
    g_test: Tensor
    test_loss: float
    cg: object
    min_curvature: float
    hvp_seconds: float
    seconds: float


def influence(theta: Tensor, x: Tensor, y: Tensor, x_test: Tensor, y_test: Tensor,
              l2: float = 1e-3, damping: float = 1e-2, hvp_batch_size: int = 100,
              tol: float = 1e-6, maxiter: int = 200, width: int = 8,
              dtype=torch.float64, cg_fn: Callable | None = None) -> InfluenceResult:
    """Predicted change of the test loss when each training point is removed.

    ``pred_i = (1/n) g_i^T (H + lambda I)^{-1} g_test``: ``g_test`` is the gradient of the
    unregularised loss on ``(x_test, y_test)`` (mean over its points), ``H`` the Hessian of
    the training objective (:func:`make_hvp`, minibatches of ``hvp_batch_size``), ``g_i``
    the gradient of point i's regularised loss (:func:`train_point_dots`). The system is
    solved by ``infcore.solvers.cg`` (damping added by the solver). The CNN's Hessian at the
    end of training is not positive definite; ``lambda`` (0.01 in the paper) makes the
    system solvable by CG, and ``min_curvature`` reports whether CG met negative curvature.

    Args:
        theta: ``(dim,)`` trained parameters.
        x, y: the n training points.
        x_test, y_test: the test point(s), e.g. ``x_test[6558:6559]``.
        l2: L2 coefficient.
        damping: ``lambda``.
        hvp_batch_size: points per HVP pass.
        tol: CG's relative residual tolerance (``||b - (H+lambda I)x|| <= tol ||b||``).
        maxiter: CG iteration cap.
        width: hidden channels.
        dtype: dtype of the influence computation (float64: CG reaches small residuals).
        cg_fn: the CG solver (default ``infcore.solvers.cg``); ``cg_fn(matvec, b,
            damping=, tol=, maxiter=)`` returning an object with ``x``, ``converged``.

    Returns:
        :class:`InfluenceResult`.
    """
    t0 = time.perf_counter()
    if cg_fn is None:
        from infcore.solvers import cg as cg_fn
    th = theta.detach().to(dtype)
    x, x_test = x.to(dtype), x_test.to(dtype)
    n = x.shape[0]
    g_test = loss_grad(th, x_test, y_test, width)
    with torch.no_grad():
        test_loss = F.cross_entropy(stacked_logits(th, x_test, width), y_test).item()
    mon = CurvatureMonitor(make_hvp(th, x, y, l2, hvp_batch_size, width), damping)
    t1 = time.perf_counter()
    res = cg_fn(mon, g_test, damping=damping, tol=tol, maxiter=maxiter)
    calls = max(len(mon.curvatures), 1)
    hvp_s = (time.perf_counter() - t1) / calls
    s = res.x.detach()
    pred = train_point_dots(th, s, x, y, l2, width) / n
    return InfluenceResult(pred, s, g_test, test_loss, res, mon.min_curvature, hvp_s,
                           time.perf_counter() - t0)


def loo_differences(eval_losses: Tensor, removed: Tensor, base_loss: float,
                    control_loss: float) -> dict:
    """Actual changes of the test loss, against both baselines.

    Args:
        eval_losses: ``(m,)`` test loss after LOO retraining of each removed point.
        removed: ``(m,)`` removed indices.
        base_loss: ``L_test(theta_hat)`` (before the continued training).
        control_loss: ``L_test(theta_control)`` (same continued steps, nothing removed).

    Returns:
        ``{"removed", "actual_paper": L(theta_-i) - L(theta_hat),
        "actual_controlled": L(theta_-i) - L(theta_control)}`` (tensors).
    """
    return {
        "removed": removed,
        "actual_paper": eval_losses - base_loss,
        "actual_controlled": eval_losses - control_loss,
    }
