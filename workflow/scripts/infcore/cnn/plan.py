"""The step plan of a training call, made on the host ahead of the device: minibatch indices
and Adam step sizes in blocks of many steps, equal to what the eager loop draws step by step.

The eager loop (:func:`infcore.cnn.train._run`) draws one batch of :func:`batch_stream` and
computes one Adam step size per step. A device program (:mod:`infcore.cnn.graphs`) instead
takes a block of k steps at once: ``(k, B)`` indices (``(k, m, B)`` with one stream per
run), and ``(k,)`` step sizes ``lr_t``; one host-to-device copy per block, none per step.
Everything here is CPU-only and deterministic, so the blocks are tested against the eager
draws on any machine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .train import run_seed


class IndexStream:
    """:func:`infcore.cnn.train.batch_stream` as a stateful source of blocks.

    Same epochs (fresh ``torch.randperm`` of the pool per epoch from a CPU generator seeded
    with ``seed``, a batch that would run past the end starts the next epoch), same lazy
    draw order, so ``take(k1)`` then ``take(k2)`` gives exactly the batches
    ``start_step .. start_step + k1 + k2 - 1`` of ``batch_stream(n, batch_size, ., seed,
    start_step, exclude)``.

    Args:
        n: number of points.
        batch_size: points per batch.
        seed: generator seed.
        start_step: batches to skip first.
        exclude: a point left out of the pool (-1: none).
    """

    def __init__(self, n: int, batch_size: int, seed: int, start_step: int = 0,
                 exclude: int = -1):
        pool = torch.arange(n)
        if exclude >= 0:
            pool = pool[pool != exclude]
        if not 0 < batch_size <= pool.numel():
            raise ValueError(f"batch_size {batch_size} must be in [1, {pool.numel()}]")
        self.pool, self.batch_size, self.exclude = pool, batch_size, exclude
        self.g = torch.Generator().manual_seed(seed)
        self.per_epoch = pool.numel() // batch_size
        self.perm, self.pos = None, self.per_epoch
        self._advance(start_step, keep=False)

    def _advance(self, k: int, keep: bool) -> list[Tensor]:
        rows, B = [], self.batch_size
        while k > 0:
            if self.pos == self.per_epoch:
                perm = torch.randperm(self.pool.numel(), generator=self.g)
                self.perm = self.pool[perm] if self.exclude >= 0 else perm
                self.pos = 0
            t = min(k, self.per_epoch - self.pos)
            if keep:
                rows.append(self.perm[self.pos * B:(self.pos + t) * B].view(t, B))
            self.pos += t
            k -= t
        return rows

    def take(self, k: int) -> Tensor:
        """The next k batches as a ``(k, batch_size)`` int64 tensor."""
        rows = self._advance(k, keep=True)
        return torch.cat(rows) if rows else torch.empty(0, self.batch_size, dtype=torch.long)


class BatchPlan:
    """The minibatches of m stacked runs: one shared stream or one stream per run.

    ``shared``: every run sees batch t of ``batch_stream(n, B, ., seed, start_step)``;
    ``take(k)`` is ``(k, B)``. Independent: run j draws from its own stream over the points
    without ``remove[j]``, seeded by :func:`infcore.cnn.train.run_seed` ``(seed,
    remove[j])`` (the eager loop's independent streams); ``take(k)`` is ``(k, m, B)``.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start_step: int,
                 remove: Sequence[int], independent: bool):
        self.independent = independent
        if independent:
            self.streams = [IndexStream(n, batch_size, run_seed(seed, r), start_step, r)
                            for r in remove]
        else:
            self.streams = [IndexStream(n, batch_size, seed, start_step)]

    def row_shape(self) -> tuple[int, ...]:
        """Shape of one step's indices: ``(B,)`` shared, ``(m, B)`` independent."""
        B = self.streams[0].batch_size
        return (len(self.streams), B) if self.independent else (B,)

    def take(self, k: int) -> Tensor:
        if not self.independent:
            return self.streams[0].take(k)
        return torch.stack([s.take(k) for s in self.streams], dim=1)


def adam_step_sizes(lr_fn: Callable[[int], float], first_step: int, first_t: int, k: int,
                    beta1: float = 0.9, beta2: float = 0.999) -> Tensor:
    """Adam's step sizes ``lr_t`` of k consecutive steps, float64, as the eager update forms them.

    Step i (0-based) has learning rate ``lr_fn(first_step + i)`` and Adam count
    ``t = first_t + i`` (1-based): ``lr_t = lr sqrt(1 - beta2^t) / (1 - beta1^t)``, the same
    Python expression as :func:`infcore.cnn.train.adam_update`, so the values are bitwise
    those of the eager loop.
    """
    out = []
    for i in range(k):
        lr, t = lr_fn(first_step + i), first_t + i
        out.append(lr * math.sqrt(1 - beta2**t) / (1 - beta1**t))
    return torch.tensor(out, dtype=torch.float64)


def block_steps(rows: int, batch_size: int, steps: int, max_bytes: int = 64 << 20,
                max_steps: int = 4096) -> int:
    """Steps per block: the int64 indices of a block stay under ``max_bytes`` (and
    ``max_steps``); at least 1, at most ``steps``."""
    per_step = max(rows, 1) * batch_size * 8
    return max(1, min(steps, max_steps, max_bytes // per_step))


__all__ = ["BatchPlan", "IndexStream", "adam_step_sizes", "block_steps"]
