"""Solvers for ``(H + lambda I) x = b``.

One damping convention everywhere: ``lambda`` (``damping``) is added to the Hessian H, and
``matvec(v)`` always computes ``H v`` without it. The paper's LiSSA "damping d" shrinks the
iterate by ``(1 - d)`` each step, which equals ``damping = d * scale`` here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

Matvec = Callable[[torch.Tensor], torch.Tensor]


class NotPositiveDefiniteError(ValueError):
    """``H + lambda I`` has a non-positive eigenvalue; the message names the smallest one."""


class LissaDivergenceError(RuntimeError):
    """The LiSSA iterate blew up; the message names the scale and the largest eigenvalue."""


class CGNotConvergedError(RuntimeError):
    """Raised by callers that require convergence (``CGResult.raise_if_not_converged``)."""


# ---------------------------------------------------------------------------------------
def solve_explicit(H: torch.Tensor, b: torch.Tensor, damping: float = 0.0) -> torch.Tensor:
    """Solve ``(H + damping I) x = b`` by Cholesky.

    Raises:
        NotPositiveDefiniteError: when the damped matrix is not positive definite; the
            message gives its smallest eigenvalue (computed by ``eigvalsh``).
    """
    A = H + damping * torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    L, info = torch.linalg.cholesky_ex(A)
    if int(info) != 0:
        lam_min = float(torch.linalg.eigvalsh(A)[0])
        raise NotPositiveDefiniteError(
            f"H + {damping:g} I is not positive definite: smallest eigenvalue {lam_min:.4g}; "
            f"add damping larger than {max(0.0, -lam_min):.4g}")
    rhs = b[:, None] if b.ndim == 1 else b
    x = torch.cholesky_solve(rhs, L)
    return x[:, 0] if b.ndim == 1 else x


# ---------------------------------------------------------------------------------------
@dataclass
class CGResult:
    """Outcome of conjugate gradients.

    Attributes:
        x: the last iterate (the solution when ``converged``).
        iterations: number of matvecs after the initial residual.
        residuals: true relative residual ``||b - A x|| / ||b||`` after each iteration
            (entry 0 is the initial one).
        converged: whether the relative residual fell below ``tol``.
        seconds: wall time.
        message: why it stopped.
    """

    x: torch.Tensor
    iterations: int
    residuals: list[float]
    converged: bool
    seconds: float
    message: str = ""

    @property
    def residual(self) -> float:
        return self.residuals[-1]

    def raise_if_not_converged(self) -> CGResult:
        if not self.converged:
            raise CGNotConvergedError(
                f"CG did not converge: {self.message} (relative residual {self.residual:.3g} "
                f"after {self.iterations} iterations)")
        return self

    def summary(self) -> dict:
        return {"iterations": self.iterations, "relative_residual": self.residual,
                "converged": self.converged, "seconds": self.seconds, "message": self.message}


def cg(matvec: Matvec, b: torch.Tensor, damping: float = 0.0, tol: float = 1e-10,
       maxiter: int | None = None, preconditioner: Matvec | None = None,
       x0: torch.Tensor | None = None, callback: Callable[[int, float], None] | None = None,
       recompute_every: int = 50) -> CGResult:
    """(Preconditioned) conjugate gradients for ``(H + damping I) x = b``.

    Stops when the relative residual ``||b - A x|| / ||b||`` is below ``tol``. The
    recursively updated residual drifts from the true one in finite precision, so the
    stopping test is confirmed on the true residual (one extra matvec) and the recursion is
    restarted from the true residual every ``recompute_every`` iterations. Breakdown
    (``p^T A p <= 0``: A not positive definite) stops with ``converged=False``.

    Args:
        matvec: ``v -> H v`` (without damping).
        b: right-hand side (dim,).
        damping: lambda added to H.
        tol: relative residual tolerance.
        maxiter: iteration cap (default ``10 * dim``).
        preconditioner: ``r -> M^{-1} r`` for an SPD M approximating A.
        x0: initial guess (zeros by default).
        callback: ``callback(iteration, relative_residual)`` after each iteration.
        recompute_every: period of the true-residual restarts.
    """
    t0 = time.perf_counter()

    def A(v):
        out = matvec(v)
        return out + damping * v if damping else out

    maxiter = 10 * b.numel() if maxiter is None else int(maxiter)
    bnorm = float(torch.linalg.vector_norm(b))
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    if bnorm == 0.0:
        return CGResult(x, 0, [0.0], True, time.perf_counter() - t0, "b = 0")
    r = b - A(x) if x0 is not None else b.clone()
    res = [float(torch.linalg.vector_norm(r)) / bnorm]
    if res[0] <= tol:
        return CGResult(x, 0, res, True, time.perf_counter() - t0, "initial guess solves it")
    M = preconditioner or (lambda v: v)
    z = M(r)
    p = z.clone()
    rz = float(r.dot(z))
    converged, message, it = False, f"reached maxiter = {maxiter}", 0
    while it < maxiter:
        it += 1
        Ap = A(p)
        pAp = float(p.dot(Ap))
        if not math.isfinite(pAp) or pAp <= 0:
            message = (f"breakdown at iteration {it}: p^T (H + {damping:g} I) p = {pAp:.3g} <= 0, "
                       "the damped Hessian is not positive definite")
            it -= 1
            break
        alpha = rz / pAp
        x = x + alpha * p
        r = r - alpha * Ap
        rel = float(torch.linalg.vector_norm(r)) / bnorm
        if rel <= tol or it % recompute_every == 0:
            r = b - A(x)  # true residual
            rel = float(torch.linalg.vector_norm(r)) / bnorm
        res.append(rel)
        if callback is not None:
            callback(it, rel)
        if rel <= tol:
            converged, message = True, f"relative residual {rel:.3g} <= tol {tol:g}"
            break
        z = M(r)
        rz_new = float(r.dot(z))
        p = z + (rz_new / rz) * p
        rz = rz_new
    return CGResult(x, it, res, converged, time.perf_counter() - t0, message)


# ---------------------------------------------------------------------------------------
def power_iteration(matvec: Matvec, dim: int, iters: int = 100, tol: float = 1e-6, seed: int = 0,
                    dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> float:
    """Largest eigenvalue (in magnitude) of a symmetric operator by power iteration.

    Stops when the Rayleigh quotient changes by less than ``tol`` relatively.
    """
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    v = torch.randn(dim, generator=g, dtype=dtype).to(device)
    v /= torch.linalg.vector_norm(v)
    lam = 0.0
    for _ in range(iters):
        w = matvec(v)
        new = float(v.dot(w))
        nrm = torch.linalg.vector_norm(w)
        if float(nrm) == 0.0:
            return 0.0
        v = w / nrm
        if abs(new - lam) <= tol * abs(new):
            return new
        lam = new
    return lam


# ---------------------------------------------------------------------------------------
@dataclass
class LissaResult:
    """Outcome of LiSSA.

    Attributes:
        x: estimate of ``(H + damping I)^{-1} b`` averaged over repeats.
        norm_trace: ``(step, mean iterate norm / scale)`` every ``trace_every`` steps.
        per_repeat: (dim, repeats) estimates of the individual repeats.
        seconds: wall time.
    """

    x: torch.Tensor
    norm_trace: list[tuple[int, float]]
    per_repeat: torch.Tensor
    seconds: float
    depth: int
    scale: float
    repeats: int
    damping: float
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        norms = [n for _, n in self.norm_trace]
        tail = norms[-max(1, len(norms) // 10):]
        return {"depth": self.depth, "scale": self.scale, "repeats": self.repeats,
                "damping": self.damping, "seconds": self.seconds,
                "final_norm": norms[-1] if norms else None,
                "max_norm": max(norms) if norms else None,
                "tail_relative_change": (max(tail) - min(tail)) / max(tail) if tail and max(tail) else 0.0,
                **self.extra}


def lissa(sample_hvp: Callable[[torch.Tensor, torch.Generator], torch.Tensor], b: torch.Tensor,
          depth: int, scale: float, repeats: int = 1, damping: float = 0.0, seed: int = 0,
          trace_every: int | None = None, divergence_factor: float = 1e6,
          largest_eigenvalue: Callable[[], float] | None = None,
          progress: Callable[[int, int], None] | None = None) -> LissaResult:
    """LiSSA (Agarwal et al. 2016) as used by Koh & Liang.

    Each repeat r runs ``x_0 = b``, ``x_t = b + x_{t-1} - (H_t + damping I) x_{t-1} / scale``
    with ``H_t`` the Hessian of a fresh minibatch, and returns ``x_depth / scale``; the
    estimate is the mean over repeats. All repeats advance together: ``sample_hvp`` gets a
    (dim, repeats) matrix and applies one independent minibatch Hessian per column.

    The recursion converges only while the eigenvalues of ``(H_t + damping I) / scale`` lie
    in (0, 2). When the iterate norm exceeds ``divergence_factor * ||b||`` (or is not
    finite) a ``LissaDivergenceError`` names the scale and the largest eigenvalue estimate
    (from ``largest_eigenvalue()`` if given).
    """
    t0 = time.perf_counter()
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    B = b[:, None].expand(-1, repeats).clone()
    X = B.clone()
    bnorm = float(torch.linalg.vector_norm(b)) or 1.0
    trace_every = trace_every or max(1, depth // 100)
    trace: list[tuple[int, float]] = []
    for t in range(1, depth + 1):
        HX = sample_hvp(X, gen)
        if damping:
            HX = HX + damping * X
        X = B + X - HX / scale
        if t % trace_every == 0 or t == depth:
            norms = torch.linalg.vector_norm(X, dim=0)
            mean_norm = float(norms.mean())
            trace.append((t, mean_norm / scale))
            if not math.isfinite(mean_norm) or float(norms.max()) > divergence_factor * bnorm:
                lam = largest_eigenvalue() if largest_eigenvalue is not None else float("nan")
                raise LissaDivergenceError(
                    f"LiSSA diverged at step {t}/{depth}: iterate norm {float(norms.max()):.3g} vs "
                    f"||b|| = {bnorm:.3g}. scale = {scale:g} must exceed the largest eigenvalue of the "
                    f"minibatch Hessian + damping (power-iteration estimate {lam:.4g}); raise scale.")
            if progress is not None:
                progress(t, depth)
    per_repeat = X / scale
    return LissaResult(per_repeat.mean(1), trace, per_repeat, time.perf_counter() - t0,
                       depth, float(scale), repeats, float(damping))
