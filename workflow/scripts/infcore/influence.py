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

from .objective import minibatch_hvp_sampler
from .solvers import CGResult, LissaResult, cg, lissa, power_iteration


def test_gradient(obj, theta: torch.Tensor, X_test: torch.Tensor, y_test: torch.Tensor) -> torch.Tensor:
    """Gradient of the mean unregularized loss over the given test point(s)."""
    return obj.data_grad(theta, X_test, y_test)


# Default CG tolerance (relative residual) per dtype: float32 HVPs stall near 1e-7..1e-6.
CG_TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def inverse_hvp_cg(obj, theta: torch.Tensor, g: torch.Tensor, damping: float = 0.0,
                   tol: float | None = None, maxiter: int | None = 1000, preconditioner: str = "none",
                   callback: Callable[[int, float], None] | None = None,
                   factor: torch.Tensor | None = None) -> CGResult:
    """``(H + damping I)^{-1} g`` by CG with autograd / closed-form HVPs on the full data.

    ``tol=None`` takes ``CG_TOL[g.dtype]``: 1e-10 in float64, 1e-5 in float32 (whose round-off
    floor is near 1e-6); other dtypes need an explicit ``tol``.

    ``preconditioner``: ``"kfac"`` (``kfac_preconditioner`` of the objective: Kronecker
    factored curvature), ``"curvature"`` (the Cholesky factor of the objective's curvature
    matrix ``C + diag(r) + U U^T + damping I``; with the exact Hessian as C, CG converges in
    one or two iterations and its residual, computed with exact HVPs, certifies the solve),
    ``"chord"`` (the LOO chord matrix's Cholesky ``factor``, :func:`infcore.loo.chord_factor`:
    the same curvature scaled by ``n/(n-1)``, formed once per model and shared with LOO).
    Fewer iterations, same answer. Where the objective has exact null directions U (``H U =
    0``; every gradient is orthogonal to them), CG runs on ``H + U U^T``, which has the same
    solution for such right-hand sides and is definite.
    """
    if tol is None and g.dtype not in CG_TOL:
        raise ValueError(f"no default CG tolerance for {g.dtype}: use float64 (tol 1e-10) or "
                         "float32 (1e-5), or pass tol")
    tol = CG_TOL[g.dtype] if tol is None else tol
    U = obj.null_space() if hasattr(obj, "null_space") else None
    pre = None
    if preconditioner == "kfac":
        if not hasattr(obj, "kfac_preconditioner"):
            raise ValueError(f"preconditioner 'kfac' is not available for {type(obj).__name__}")
        pre = obj.kfac_preconditioner(theta, damping)
    elif preconditioner == "curvature":
        pre = curvature_preconditioner(obj, theta, damping)
    elif preconditioner == "chord":
        if factor is None:
            raise ValueError("preconditioner 'chord' needs the LOO chord factor (factor=...)")
        pre = factor_preconditioner(factor)
    elif preconditioner not in ("none", None):
        raise ValueError(f"unknown preconditioner {preconditioner!r}; use 'none', 'kfac', 'curvature' "
                         "or 'chord'")
    matvec = obj.hvp_fn(theta) if hasattr(obj, "hvp_fn") else (lambda v: obj.hvp(theta, v))
    if U is not None:
        base = matvec

        def matvec(v: torch.Tensor) -> torch.Tensor:
            return base(v) + U @ (U.T @ v)

    return cg(matvec, g, damping=damping, tol=tol, maxiter=maxiter, preconditioner=pre,
              callback=callback)


def curvature_preconditioner(obj, theta: torch.Tensor, damping: float = 0.0) -> Callable:
    """``r -> (C + diag(reg) + U U^T + damping I)^{-1} r`` from one float64 Cholesky factor
    of the objective's curvature matrix (:meth:`Objective.curvature`)."""
    C, keep = obj.curvature(theta, dtype=torch.float64)
    reg = obj.reg_diagonal()
    M = C.clone()
    M.diagonal().add_((reg if keep is None else reg[keep]) + damping)
    U = obj.null_space()
    if U is not None:
        Uk = U if keep is None else U[keep]
        M += Uk @ Uk.T
    L = torch.linalg.cholesky(M)
    free_diag = None
    if keep is not None:
        free = torch.ones(obj.dim, dtype=torch.bool)
        free[keep] = False
        free_diag = reg[free] + damping

    def apply(r: torch.Tensor) -> torch.Tensor:
        if keep is None:
            return torch.cholesky_solve(r[:, None], L)[:, 0]
        out = r / 1.0
        out[keep] = torch.cholesky_solve(r[keep][:, None], L)[:, 0]
        out[free] = r[free] / free_diag
        return out

    return apply


def factor_preconditioner(L: torch.Tensor) -> Callable:
    """``r -> (L L^T)^{-1} r`` in float64 from a lower Cholesky factor (any float dtype)."""
    L64 = L.to(torch.float64)
    return lambda r: torch.cholesky_solve(r.to(torch.float64)[:, None], L64)[:, 0].to(r.dtype)


def minibatch_hvp(obj, theta: torch.Tensor, batch_size: int) -> Callable:
    """``sample_hvp(V, gen)`` for LiSSA: column r of V times the Hessian (with L2 term) of a
    fresh uniformly sampled minibatch of ``batch_size`` training points (the objective's
    ``minibatch_hvp``; objectives without one sample by ``obj.hvp(theta, v, idx)``)."""
    if hasattr(obj, "minibatch_hvp"):
        return obj.minibatch_hvp(theta, batch_size)
    return minibatch_hvp_sampler(obj, theta, batch_size)


def largest_example_eigenvalue(obj, theta: torch.Tensor) -> float | None:
    """Largest eigenvalue of any single training point's Hessian (with L2): the scale LiSSA
    with batch size 1 must exceed; None where the objective has no cheap form of it."""
    fn = getattr(obj, "largest_example_eigenvalue", None)
    return None if fn is None else fn(theta)


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


def gauss_newton_inverse(obj, theta: torch.Tensor, g: torch.Tensor,
                         damping: float = 0.0) -> tuple[torch.Tensor, dict]:
    """``(G + diag(r) + damping I)^+ g`` by an explicit eigendecomposition, G the Gauss-Newton data
    matrix (:meth:`Objective.gauss_newton`), r the L2 diagonal: the influence of a model whose
    curvature is its Gauss-Newton approximation (equal to the Hessian for logistic regression).

    Exact null directions U of the objective are covered by ``U U^T``. G can have further null
    directions that the Hessian does not (combinations of unregularized parameters that no
    training point's logits see to first order: ``J_i v = 0`` for every i); every training
    gradient ``g_i`` is orthogonal to them, so ``g_i^T (G + lambda I)^{-1} g`` has a limit as
    lambda -> 0, which the pseudo-inverse gives: eigenvalues below ``dim * eps * lambda_max``
    (numpy's rank convention) are dropped. Returns the solution and ``{"null_directions": how
    many were dropped, "min_eigenvalue": the smallest kept, "max_eigenvalue"}``."""
    M = obj.gauss_newton(theta).to(torch.float64)
    M.diagonal().add_(obj.reg_diagonal().to(torch.float64) + damping)
    U = obj.null_space()
    if U is not None:
        U64 = U.to(torch.float64)
        M += U64 @ U64.T
    ev, V = torch.linalg.eigh(0.5 * (M + M.T))
    cutoff = M.shape[0] * torch.finfo(torch.float64).eps * float(ev[-1])
    keep = ev > cutoff
    Vk = V[:, keep]
    s = Vk @ ((Vk.T @ g.to(torch.float64)) / ev[keep])
    info = {"null_directions": int((~keep).sum()), "min_eigenvalue": float(ev[keep][0]),
            "max_eigenvalue": float(ev[-1]), "cutoff": cutoff}
    return s.to(g.dtype), info


def predicted_loss_change(obj, theta: torch.Tensor, s: torch.Tensor,
                          idx: torch.Tensor | None = None) -> torch.Tensor:
    """``(1/n) g_i . s`` for every training point (or the rows ``idx``).

    With ``s = (H + lambda I)^{-1} g_test`` this is the predicted change of the test loss
    when point i is removed; s may be (dim, m) for m test points at once -> (n, m).
    """
    return obj.per_example_dot(theta, s, idx) / obj.n
