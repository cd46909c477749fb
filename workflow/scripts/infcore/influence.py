"""Influence of removing a training point on a test loss (Koh & Liang 2017, eq. 2).

``pred_i = (1/n) g_test^T (H + lambda I)^{-1} g_i`` predicts
``L_test(theta_-i) - L_test(theta_hat)``: removing point i moves the optimum by
``(1/n) H^{-1} g_i`` to first order (upweighting by ``eps = -1/n``), and the test loss by
``g_test`` dotted with that step. This is ``-(1/n) I_up,loss`` of the paper. ``g_i`` is the
gradient of point i's regularized loss and ``g_test`` of the unregularized test loss.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .objective import LogisticObjective
from .solvers import CGResult, LissaResult, cg, lissa, power_iteration


def test_gradient(obj, theta: torch.Tensor, X_test: torch.Tensor, y_test: torch.Tensor) -> torch.Tensor:
    """Gradient of the mean unregularized loss over the given test point(s)."""
    return obj.data_grad(theta, X_test, y_test)


def inverse_hvp_cg(obj, theta: torch.Tensor, g: torch.Tensor, damping: float = 0.0,
                   tol: float = 1e-10, maxiter: int | None = 1000, preconditioner: str = "none",
                   callback: Callable[[int, float], None] | None = None) -> CGResult:
    """``(H + damping I)^{-1} g`` by CG with autograd / closed-form HVPs on the full data.

    ``preconditioner="kfac"`` uses ``LogisticObjective.kfac_preconditioner`` (Kronecker
    factored curvature; fewer iterations, same answer).
    """
    pre = None
    if preconditioner == "kfac":
        if not hasattr(obj, "kfac_preconditioner"):
            raise ValueError(f"preconditioner 'kfac' is not available for {type(obj).__name__}")
        pre = obj.kfac_preconditioner(theta, damping)
    elif preconditioner not in ("none", None):
        raise ValueError(f"unknown preconditioner {preconditioner!r}; use 'none' or 'kfac'")
    matvec = obj.hvp_fn(theta) if hasattr(obj, "hvp_fn") else (lambda v: obj.hvp(theta, v))
    return cg(matvec, g, damping=damping, tol=tol, maxiter=maxiter, preconditioner=pre,
              callback=callback)


def minibatch_hvp(obj, theta: torch.Tensor, batch_size: int) -> Callable:
    """``sample_hvp(V, gen)`` for LiSSA: column r of V times the Hessian (with L2 term) of a
    fresh uniformly sampled minibatch of ``batch_size`` training points."""
    if isinstance(obj, LogisticObjective):
        k, d = obj.n_classes, obj.d

        def sample(V: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            R = V.shape[1]
            idx = torch.randint(obj.n, (R, batch_size), generator=gen).to(obj.X.device)
            X = obj.X[idx]  # (R, b, d)
            P = torch.softmax(torch.einsum("rbd,kd->rbk", X, obj.weight(theta)), -1)
            Vm = V.T.reshape(R, k, d)
            Z = torch.einsum("rbd,rkd->rbk", X, Vm)
            Q = P * Z - P * (P * Z).sum(-1, keepdim=True)
            out = torch.einsum("rbk,rbd->rkd", Q, X).reshape(R, -1).T / batch_size
            return out + obj.l2 * V

        return sample

    def sample_generic(V: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        cols = []
        for r in range(V.shape[1]):
            idx = torch.randint(obj.n, (batch_size,), generator=gen)
            cols.append(obj.hvp(theta, V[:, r], idx=idx))
        return torch.stack(cols, 1)

    return sample_generic


def largest_example_eigenvalue(obj, theta: torch.Tensor) -> float:
    """Largest eigenvalue of any single training point's Hessian (with L2): the scale LiSSA
    with batch size 1 must exceed. Closed form for logistic regression:
    ``lambda_max(A_i (x) x_i x_i^T) = lambda_max(A_i) ||x_i||^2``."""
    if not isinstance(obj, LogisticObjective):
        raise TypeError("closed form only for LogisticObjective")
    lam = torch.zeros(obj.n, dtype=obj.X.dtype)
    for s in range(0, obj.n, 8192):
        P = obj.probs(theta, obj.X[s:s + 8192])
        A = torch.diag_embed(P) - P[:, :, None] * P[:, None, :]
        lam[s:s + 8192] = torch.linalg.eigvalsh(A)[:, -1] * (obj.X[s:s + 8192] ** 2).sum(1)
    return float(lam.max()) + obj.l2


def inverse_hvp_lissa(obj, theta: torch.Tensor, g: torch.Tensor, depth: int = 5000,
                      scale: float = 25.0, repeats: int = 10, batch_size: int = 1,
                      damping: float = 0.0, seed: int = 17,
                      progress: Callable[[int, int], None] | None = None) -> LissaResult:
    """``(H + damping I)^{-1} g`` by LiSSA (paper defaults: depth 5000, scale 25, 10 repeats,
    batch 1, no damping, seed 17). On divergence the error names the scale and the
    power-iteration estimate of the full Hessian's largest eigenvalue (and, for logistic
    regression, the largest single-point eigenvalue)."""

    def lam_max() -> float:
        matvec = obj.hvp_fn(theta) if hasattr(obj, "hvp_fn") else (lambda v: obj.hvp(theta, v))
        return power_iteration(lambda v: matvec(v) + damping * v, theta.numel(),
                               iters=200, dtype=theta.dtype, device=theta.device)

    return lissa(minibatch_hvp(obj, theta, batch_size), g, depth=depth, scale=scale,
                 repeats=repeats, damping=damping, seed=seed, largest_eigenvalue=lam_max,
                 progress=progress)


def predicted_loss_change(obj, theta: torch.Tensor, s: torch.Tensor,
                          idx: torch.Tensor | None = None) -> torch.Tensor:
    """``(1/n) g_i . s`` for every training point (or the rows ``idx``).

    With ``s = (H + lambda I)^{-1} g_test`` this is the predicted change of the test loss
    when point i is removed; s may be (dim, m) for m test points at once -> (n, m).
    """
    return obj.per_example_dot(theta, s, idx) / obj.n
