"""Influence for the CNN: the training objective, Hessian-vector products by double backward,
the ``g_i . s`` dots by forward mode, CG with a curvature monitor, and the LOO differences."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..solvers import cg as default_cg
from .model import stacked_logits, weight_mask


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
        cg_fn = default_cg
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
