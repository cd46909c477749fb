"""The device program of training and batched retraining: one Adam step of m stacked runs as
tensor operations on static buffers, with no host synchronisation per step, optionally
captured once as a CUDA graph and replayed.

The network has 2,616 parameters, so on a GPU a step issued op by op costs mostly kernel
launches and Python; the eager loop (:func:`infcore.cnn.train._run`) adds a blocking
host-to-device copy of the batch indices and (when logging) an ``.item()`` per step. Here:

* the host makes the plan of a block of k steps ahead (:mod:`infcore.cnn.plan`: indices,
  Adam step sizes), copies it into static device buffers (one copy per block);
* :meth:`StepProgram.step` reads step ``pos`` of the block from the buffers (``pos`` is a
  device counter), computes the masked stacked objective, its gradient, the Adam update
  in place, writes the objective into a device buffer and increments ``pos``: the same math
  as the eager loop, in the same order, with no Python number that changes from step to step;
* engine ``"graph"`` (CUDA only) captures that step once as a ``torch.cuda.CUDAGraph`` and
  replays it k times per block; engine ``"blocks"`` calls it uncaptured (any device; on the
  CPU it is how the captured step's math is tested);
* the objective trace is read back one block late (the device keeps working meanwhile).

Engines (``train(engine=...)``, ``retrain(engine=...)``, config ``cnn.engine``): ``"eager"``
the step-by-step loop (the reference numbers), ``"blocks"``, ``"graph"``; ``"auto"``: graph
on CUDA, eager elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .model import weight_mask
from .plan import BatchPlan, adam_step_sizes, block_steps
from .train import AdamState, _masked_objective

ENGINES = ("auto", "eager", "blocks", "graph")


def resolve_engine(engine: str, device) -> str:
    """The engine that runs on ``device``: ``"auto"`` is graph on CUDA, eager elsewhere.

    Raises:
        ValueError: unknown engine; RuntimeError: ``"graph"`` on a device that is not CUDA.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    cuda = torch.device(device).type == "cuda"
    if engine == "auto":
        return "graph" if cuda else "eager"
    if engine == "graph" and not cuda:
        raise RuntimeError(f"engine 'graph' (CUDA graph capture) needs a CUDA device, the data "
                           f"is on {device}; use engine 'blocks' or 'eager' there")
    return engine


def full_float32() -> None:
    """IEEE float32 on CUDA: no TF32 in cuDNN convolutions (PyTorch allows it there by
    default) or in matmuls. TF32 rounds products to 10 mantissa bits (~1e-3 relative), the
    CPU path computes in float32 (~1e-7); this network is launch-bound on a GPU, so TF32
    would buy no speed. Called by the CNN steps and the device check on CUDA."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


class StepProgram:
    """Static state of m stacked runs and their Adam step as buffer-to-buffer tensor ops.

    ``theta`` and the Adam moments are the caller's ``(m, dim)`` tensors, updated in place.
    The block buffers hold up to ``block`` steps: ``idx (block, *row)`` batch indices,
    ``lrt (block,)`` float64 Adam step sizes, ``obj (block,)`` the summed objective of each
    step; ``pos`` (0-d int64) is the step within the block.

    Args:
        theta: ``(m, dim)`` parameters (device and dtype of the data).
        adam: their Adam state (moments ``(m, dim)``; its ``step`` is not used here).
        x, y: the training set on the device.
        remove: ``(m,)`` removed index per run (``-1``: none), on the device.
        row: shape of one step's indices (``(B,)`` shared, ``(m, B)`` one stream per run).
        block: steps per block.
        l2, dims, impl: as in :func:`infcore.cnn.train._masked_objective`.
    """

    def __init__(self, theta: Tensor, adam: AdamState, x: Tensor, y: Tensor, remove: Tensor,
                 row: tuple[int, ...], block: int, l2: float, dims: tuple, impl: str = "auto",
                 beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        dev = theta.device
        self.theta, self.m, self.v, self.x, self.y, self.remove = theta, adam.m, adam.v, x, y, remove
        self.l2, self.dims, self.impl = l2, dims, impl
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.wmask = weight_mask(*dims, dtype=theta.dtype, device=dev)
        self.idx = torch.zeros((block, *row), dtype=torch.long, device=dev)
        self.lrt = torch.zeros(block, dtype=torch.float64, device=dev)
        self.obj = torch.zeros(block, dtype=theta.dtype, device=dev)
        self.pos = torch.zeros((), dtype=torch.long, device=dev)
        self.block = block
        self.graph = None  # the captured step (engine "graph"), kept alive with its memory

    def load(self, idx: Tensor, lrt: Tensor) -> None:
        """Copy a block's plan (CPU tensors, k <= block steps) into the buffers; pos = 0."""
        k = idx.shape[0]
        if self.idx.is_cuda:
            idx, lrt = idx.pin_memory(), lrt.pin_memory()
        self.idx[:k].copy_(idx, non_blocking=True)
        self.lrt[:k].copy_(lrt, non_blocking=True)
        self.pos.zero_()

    def step(self) -> None:
        """One Adam step of all m runs on batch ``pos`` of the block (no host sync)."""
        p = self.pos.view(1)
        bidx = self.idx.index_select(0, p)[0]
        neg_lrt = -self.lrt.index_select(0, p).to(self.theta.dtype)  # (1,)
        th = self.theta.detach().requires_grad_(True)
        with torch.enable_grad():
            obj = _masked_objective(th, self.x[bidx], self.y[bidx], bidx, self.remove, self.l2,
                                    self.wmask, self.dims, self.impl)
            (g,) = torch.autograd.grad(obj, th)
        with torch.no_grad():
            # adam_update's operations in its order; theta + (-lr_t * m) / (sqrt(v) + eps)
            # is addcdiv_(m, sqrt(v) + eps, value=-lr_t) with lr_t from a buffer
            self.m.mul_(self.beta1).add_(g, alpha=1 - self.beta1)
            self.v.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
            self.theta.add_(neg_lrt * self.m / self.v.sqrt().add_(self.eps))
            self.obj.index_copy_(0, p, obj.detach().reshape(1))
            self.pos.add_(1)

    def state(self) -> list[Tensor]:
        return [self.theta, self.m, self.v, self.obj, self.pos]


def capture(prog: StepProgram, warmup: int = 3) -> Callable[[], None]:
    """Capture ``prog.step`` as a CUDA graph; returns its ``replay`` (CUDA only).

    Call it with a block loaded. The warm-up steps (on a side stream, as the capture needs)
    run on the real buffers at block position 0 and are undone: the state is restored
    afterwards, so capturing changes nothing. Capturing itself runs no kernel.
    """
    saved = [t.clone() for t in prog.state()]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            prog.pos.zero_()
            prog.step()
    torch.cuda.current_stream().wait_stream(side)
    with torch.no_grad():
        for t, s in zip(prog.state(), saved, strict=True):
            t.copy_(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        prog.step()
    prog.graph = graph
    return graph.replay


def run_program(theta: Tensor, adam: AdamState, x: Tensor, y: Tensor, remove: Tensor,
                steps: int, batch_size: int, seed: int, lr_fn: Callable[[int], float],
                l2: float, dims: tuple, start_step: int, stream_offset: int, log_every: int,
                progress: Callable[[int, int, str], None] | None, impl: str = "auto",
                independent: bool = False, engine: str = "blocks",
                max_block: int = 4096) -> list:
    """The device program's replacement of :func:`infcore.cnn.train._run` (same contract).

    Updates ``theta (m, dim)`` and ``adam`` in place (``adam.step`` += steps) and returns
    the trace ``[(global step, mean objective over models)]`` at the same steps as the eager
    loop (every ``log_every`` steps and the last); ``progress`` is called for them, once
    their block has been read back.

    Args:
        engine: ``"blocks"`` (uncaptured step) or ``"graph"`` (captured, CUDA).
        max_block: at most this many steps per block (and 64 MB of indices).
        Others: as :func:`infcore.cnn.train._run`.
    """
    if engine not in ("blocks", "graph"):
        raise ValueError(f"run_program runs engine 'blocks' or 'graph', not {engine!r}")
    m, n = theta.shape[0], x.shape[0]
    plan = BatchPlan(n, batch_size, seed, stream_offset, remove.tolist(), independent)
    row = plan.row_shape()
    k_max = block_steps(row[0] if independent else 1, batch_size, steps, max_steps=max_block)
    prog = StepProgram(theta, adam, x, y, remove, row, k_max, l2, dims, impl)
    run_step = prog.step if engine == "blocks" else None  # graph: captured on the first block
    trace: list = []

    def read_back(done: int, k: int, objs: Tensor) -> None:
        vals = objs.cpu().tolist()
        for i in range(k):
            j = done + i + 1
            if j % log_every == 0 or j == steps:
                val = vals[i] / m
                trace.append((start_step + j, val))
                if progress is not None:
                    progress(j, steps, f"objective {val:.6f}")

    done, pending, t0 = 0, None, adam.step
    while done < steps:
        k = min(k_max, steps - done)
        prog.load(plan.take(k), adam_step_sizes(lr_fn, start_step + done, t0 + done + 1, k))
        if run_step is None:
            run_step = capture(prog)
        for _ in range(k):
            run_step()
        if pending is not None:
            read_back(*pending)
        pending = (done, k, prog.obj[:k].clone()) if log_every else None
        done += k
    if pending is not None:
        read_back(*pending)
    adam.step = t0 + steps
    return trace


__all__ = ["ENGINES", "StepProgram", "capture", "full_float32", "resolve_engine", "run_program"]
