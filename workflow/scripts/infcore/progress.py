"""Progress loggers for the long steps: rate, elapsed time and ETA, at most every few seconds.

:class:`Progress` counts steps (LiSSA, LOO); :class:`CGProgress` is a CG callback that
estimates the iterations left from the decay of the relative residual.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

Log = Callable[[str], None]


def _fmt_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


class Progress:
    """Logs ``what: done/total (pct), rate unit/s, elapsed, ETA`` at most every ``every`` s."""

    def __init__(self, log: Log, what: str, total: int, unit: str = "steps", every: float = 10.0):
        self.log, self.what, self.total, self.unit, self.every = log, what, int(total), unit, every
        self.t0 = time.perf_counter()
        self.last = -math.inf

    def __call__(self, done: int, total: int | None = None, extra: str = "") -> None:
        now = time.perf_counter()
        total = self.total if total is None else int(total)
        if now - self.last < self.every and done < total:
            return
        self.last = now
        el = now - self.t0
        rate = done / el if el > 0 else math.inf
        eta = (total - done) / rate if rate > 0 else math.inf
        pct = 100.0 * done / total if total else 100.0
        self.log(f"{self.what}: {done}/{total} {self.unit} ({pct:.0f}%), {rate:.3g} {self.unit}/s, "
                 f"elapsed {_fmt_seconds(el)}, ETA {_fmt_seconds(eta)}" + (f", {extra}" if extra else ""))


class CGProgress:
    """CG callback: logs iteration, residual, rate and an ETA from the residual's decay."""

    def __init__(self, log: Log, tol: float, every: float = 10.0):
        self.log, self.tol, self.every = log, tol, every
        self.t0 = time.perf_counter()
        self.last = -math.inf
        self.first: float | None = None

    def __call__(self, it: int, rel: float) -> None:
        if self.first is None:
            self.first = rel
        now = time.perf_counter()
        if now - self.last < self.every and rel > self.tol:
            return
        self.last = now
        el = now - self.t0
        rate = it / el if el > 0 else math.inf
        eta = math.inf
        if 0 < rel < 1 and it > 0 and rel > self.tol:  # residual ~ r^it: iterations left
            per_it = math.log(rel) / it
            if per_it < 0:
                eta = (math.log(self.tol) - math.log(rel)) / per_it / rate
        self.log(f"CG: iteration {it}, relative residual {rel:.3e} (tol {self.tol:g}), "
                 f"{rate:.3g} it/s, elapsed {_fmt_seconds(el)}, ETA {_fmt_seconds(eta) if rel > self.tol else '0s'}")
