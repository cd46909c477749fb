"""Training the CNN and retraining it without a point: Adam (TensorFlow 1 form), the seeded
minibatch stream, and the main run, the control and the LOO runs on one code path."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from .model import CONTROL, example_losses, init_params, stacked_logits, weight_mask


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


def _execute(engine: str, theta: Tensor, adam: AdamState, x: Tensor, *args, **kw) -> list:
    """Run the steps with ``engine`` (see :mod:`infcore.cnn.graphs`): ``"eager"`` is
    :func:`_run`, ``"blocks"`` / ``"graph"`` the device program (same arguments)."""
    from .graphs import resolve_engine, run_program  # graphs builds on this module

    engine = resolve_engine(engine, x.device)
    if engine == "eager":
        return _run(theta, adam, x, *args, **kw)
    return run_program(theta, adam, x, *args, **kw, engine=engine)


def train(x: Tensor, y: Tensor, steps: int, theta0: Tensor | None = None,
          adam0: AdamState | None = None, start_step: int = 0, batch_size: int = 500,
          lr: float = 1e-4, decay_steps: Sequence[int] = (110_000, 220_000),
          decay_factors: Sequence[float] = (0.1, 0.01), l2: float = 1e-3, seed: int = 0,
          init_seed: int = 0, width: int = 8, log_every: int = 1000,
          progress: Callable[[int, int, str], None] | None = None,
          impl: str = "auto", engine: str = "auto") -> TrainResult:
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
        engine: ``"eager"`` (step by step), ``"blocks"`` (device program), ``"graph"``
            (device program captured as a CUDA graph) or ``"auto"`` (graph on CUDA, eager
            elsewhere); see :mod:`infcore.cnn.graphs`. Same math; the program's trace is
            read back a block late.

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
    trace = _execute(engine, theta, adam, x, y, remove, steps, batch_size, seed,
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
            impl: str = "auto", streams: str = "shared", engine: str = "auto") -> TrainResult:
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
        engine: how the steps run (see :func:`train`); each chunk is one program.

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
        tr = _execute(engine, theta, adam, x, y, r, steps, batch_size, seed, lambda t: lr, l2,
                      dims, start_step, start_step, log_every, None, impl,
                      streams == "independent")
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
