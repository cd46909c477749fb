"""Certified leave-one-out retraining of convex models, batched over removed points.

For a removed point i the LOO objective is

    F_-i(theta) = (1/(n-1)) sum_{j != i} l_j(theta) + (l2/2) ||theta||^2,
    grad F_-i(theta) = (n D(theta) - d_i(theta)) / (n-1) + l2 theta,

with ``D`` the mean data gradient over all n points and ``d_i`` point i's data gradient.
Starting from theta_hat, every removed point takes chord-Newton steps
``theta <- theta - M_i^{-1} grad F_-i(theta)`` with one matrix factored once:
``M = (n/(n-1)) (H_data(theta_hat)) + l2 I`` (Cholesky), corrected per point by Woodbury
for ``- H_i / (n-1)`` (the removed point's own curvature, rank <= k) when that matters
(small n relative to the dimension). The removed points advance together: the gradients of
all active points are two matrix products over the data per step, and all steps share one
``cholesky_solve``. Each point stops when ``max |grad F_-i| <= tol``, the certificate
recorded per point. The Hessian that forms M may be accumulated in float32 (it only sets the
step, not the answer; the certificate is float64).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .objective import LogisticObjective


@dataclass
class LooResult:
    """Leave-one-out optima for the removed points, in the order given.

    Attributes:
        indices: removed training points (m,).
        thetas: (m, dim) LOO optima.
        grad_maxnorm: (m,) ``max |grad F_-i(theta_-i)|``, the certificate.
        steps: (m,) chord steps taken (each one full-data gradient).
        converged: (m,) certificate below tol.
        seconds: wall time, and ``setup_seconds`` for the Hessian and its factor.
    """

    indices: torch.Tensor
    thetas: torch.Tensor
    grad_maxnorm: torch.Tensor
    steps: torch.Tensor
    converged: torch.Tensor
    seconds: float
    setup_seconds: float

    def summary(self) -> dict:
        return {"points": int(self.indices.numel()), "seconds": self.seconds,
                "setup_seconds": self.setup_seconds,
                "max_grad_maxnorm": float(self.grad_maxnorm.max()) if self.indices.numel() else 0.0,
                "all_converged": bool(self.converged.all()),
                "mean_steps": float(self.steps.double().mean()) if self.indices.numel() else 0.0}


def chord_factor(obj: LogisticObjective, theta_hat: torch.Tensor,
                 hessian_dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
    """Lower Cholesky factor of ``M = (n/(n-1)) H_data(theta_hat) + l2 I``, the chord matrix
    shared by every removed point. Compute it once and pass it as ``LooSolver(factor=...)``
    to shards that would otherwise each form the Hessian."""
    n, l2 = obj.n, obj.l2
    H = obj.hessian(theta_hat, dtype=hessian_dtype)
    H.diagonal().sub_(l2)
    H.mul_(n / (n - 1)).diagonal().add_(l2)
    L, info = torch.linalg.cholesky_ex(H)
    if int(info) != 0:
        raise ValueError("LOO chord matrix is not positive definite; is l2 > 0?")
    return L


class LooSolver:
    """Holds the factored chord matrix so several batches of points can reuse it.

    Args:
        obj: a ``LogisticObjective`` (n points).
        theta_hat: the full-data optimum.
        hessian_dtype: dtype of the products that form the Hessian (float32 is enough).
        woodbury: apply the per-point rank-k correction; "auto" when n < 4 * dim.
    """

    def __init__(self, obj: LogisticObjective, theta_hat: torch.Tensor,
                 hessian_dtype: torch.dtype | None = torch.float32, woodbury: bool | str = "auto",
                 log: Callable[[str], None] | None = None, factor: torch.Tensor | None = None):
        if not isinstance(obj, LogisticObjective):
            raise TypeError(f"LOO retraining supports LogisticObjective, got {type(obj).__name__}")
        if obj.n < 2:
            raise ValueError("need at least 2 training points for leave-one-out")
        t0 = time.perf_counter()
        self.obj, self.theta_hat = obj, theta_hat
        self.L = chord_factor(obj, theta_hat, hessian_dtype) if factor is None else factor.to(obj.X.dtype)
        if self.L.shape != (obj.dim, obj.dim):
            raise ValueError(f"factor has shape {tuple(self.L.shape)}, expected ({obj.dim}, {obj.dim})")
        self.woodbury = (obj.n < 4 * obj.dim) if woodbury == "auto" else bool(woodbury)
        self.D_hat = obj.data_grad(theta_hat, obj.X, obj.y)
        self.newton_after, self.newton_max_dim = 4, 1024
        self.setup_seconds = time.perf_counter() - t0
        if log:
            log(f"LOO setup: Hessian {obj.dim}x{obj.dim} and Cholesky in {self.setup_seconds:.1f} s "
                f"(woodbury={self.woodbury})")

    def _data_grads(self, thetas: torch.Tensor) -> torch.Tensor:
        """Mean data gradient over all n points at each row of thetas: (m, dim)."""
        obj = self.obj
        m, k, d = thetas.shape[0], obj.n_classes, obj.d
        W = thetas.reshape(m * k, d)
        logits = (obj.X @ W.T).view(obj.n, m, k)
        P = torch.softmax(logits, dim=2)
        P -= obj._Y[:, None, :]
        return (P.view(obj.n, m * k).T @ obj.X).reshape(m, k * d) / obj.n

    def _point_grads(self, thetas: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        obj = self.obj
        X, Y = obj.X[idx], obj._Y[idx]
        logits = torch.einsum("md,mkd->mk", X, obj.weight(thetas))
        R = torch.softmax(logits, 1) - Y
        return (R[:, :, None] * X[:, None, :]).reshape(len(idx), obj.dim)

    def _solve(self, G: torch.Tensor, U: torch.Tensor | None, Z: torch.Tensor | None,
               S: torch.Tensor | None) -> torch.Tensor:
        """Rows of ``M_i^{-1} g_i`` with ``M_i = M - U_i U_i^T / (n-1)`` (Woodbury);
        Z (m, dim, k) = M^{-1} U_i and S (m, k, k) = (n-1) I - U_i^T Z."""
        Y = torch.cholesky_solve(G.T, self.L).T
        if U is None:
            return Y
        c = torch.linalg.solve(S, torch.einsum("mpk,mp->mk", U, Y))
        return Y + torch.einsum("mpk,mk->mp", Z, c)

    def _newton_steps(self, T: torch.Tensor, idx: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        """Exact Newton steps with each point's own LOO Hessian at its current iterate; used
        for small models when the chord iteration contracts slowly (a point far from
        theta_hat)."""
        obj, n = self.obj, self.obj.n
        out = torch.empty_like(G)
        for j in range(T.shape[0]):
            H = obj.hessian(T[j])
            H.diagonal().sub_(obj.l2)
            U = obj.example_hessian_factor(T[j], idx[j:j + 1])[0]
            H = (n * H - U @ U.T) / (n - 1)
            H.diagonal().add_(obj.l2)
            out[j] = torch.linalg.solve(H, G[j])
        return out

    def run(self, indices, tol: float = 1e-10, max_steps: int = 30, chunk: int | None = None,
            progress: Callable[[int, int, str], None] | None = None) -> LooResult:
        """LOO optima for ``indices`` (any order, repeats allowed)."""
        t0 = time.perf_counter()
        obj, n = self.obj, self.obj.n
        idx_all = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if idx_all.numel() and (int(idx_all.min()) < 0 or int(idx_all.max()) >= n):
            raise IndexError(f"removed indices must lie in [0, {n}), got [{int(idx_all.min())}, {int(idx_all.max())}]")
        m_all = idx_all.numel()
        if chunk is None:  # bound the (n, chunk, k) probability block to ~512 MB
            chunk = max(1, min(256, (512 * 2**20) // (3 * 8 * n * obj.n_classes)))
        thetas = self.theta_hat[None, :].repeat(m_all, 1)
        gmax = torch.zeros(m_all, dtype=self.theta_hat.dtype)
        steps = torch.zeros(m_all, dtype=torch.long)
        l2 = obj.l2
        done = 0
        for s in range(0, m_all, chunk):
            idx = idx_all[s:s + chunk]
            T = thetas[s:s + chunk]
            U = Z = S = None
            if self.woodbury:
                U = obj.example_hessian_factor(self.theta_hat, idx)
                mm, p, k = U.shape
                Z = torch.cholesky_solve(U.permute(1, 0, 2).reshape(p, mm * k), self.L)
                Z = Z.reshape(p, mm, k).permute(1, 0, 2)
                S = (n - 1) * torch.eye(k, dtype=Z.dtype) - torch.einsum("mpk,mpl->mkl", U, Z)
            # gradient at theta_hat needs no pass over the data
            G = (n * self.D_hat[None, :] - self._point_grads(T, idx)) / (n - 1) + l2 * T
            active = torch.arange(len(idx))
            gm = G.abs().amax(1)
            gmax[s:s + chunk] = gm
            active = active[gm > tol]
            G = G[gm > tol]
            step = 0
            while active.numel() and step < max_steps:
                step += 1
                if step > self.newton_after and obj.dim <= self.newton_max_dim:
                    T[active] -= self._newton_steps(T[active], idx[active], G)
                elif U is None:
                    T[active] -= self._solve(G, None, None, None)
                else:
                    T[active] -= self._solve(G, U[active], Z[active], S[active])
                steps[s + active] += 1
                Ta = T[active]
                G = (n * self._data_grads(Ta) - self._point_grads(Ta, idx[active])) / (n - 1) + l2 * Ta
                gm = G.abs().amax(1)
                gmax[s + active] = gm
                keep = gm > tol
                active, G = active[keep], G[keep]
            thetas[s:s + chunk] = T
            done += len(idx)
            if progress is not None:
                el = time.perf_counter() - t0
                rate = done / el if el > 0 else float("inf")
                progress(done, m_all, f"{done}/{m_all} points, {rate:.2f} points/s, "
                         f"ETA {(m_all - done) / rate if rate > 0 else 0:.0f} s, "
                         f"max|grad| {float(gmax[:done].max()):.2e}")
        return LooResult(idx_all, thetas, gmax, steps, gmax <= tol, time.perf_counter() - t0,
                         self.setup_seconds)


def loo_retrain(obj: LogisticObjective, theta_hat: torch.Tensor, indices, tol: float = 1e-10,
                max_steps: int = 30, chunk: int | None = None,
                progress: Callable[[int, int, str], None] | None = None,
                hessian_dtype: torch.dtype | None = torch.float32, woodbury: bool | str = "auto",
                log: Callable[[str], None] | None = None,
                factor: torch.Tensor | None = None) -> LooResult:
    """Certified LOO optima of ``obj`` without each of ``indices`` (see module docstring).

    ``factor``: a precomputed ``chord_factor(obj, theta_hat)`` (float32 storage is enough)."""
    solver = LooSolver(obj, theta_hat, hessian_dtype=hessian_dtype, woodbury=woodbury, log=log,
                       factor=factor)
    res = solver.run(indices, tol=tol, max_steps=max_steps, chunk=chunk, progress=progress)
    res.seconds += solver.setup_seconds
    return res
