"""Certified local minima of non-convex objectives: fit, and the curvature certificate.

A fit of a non-convex model (the CNN) is certified when (a) the full-batch float64 gradient
has ``max |grad F| <= tol`` and (b) the exact Hessian is positive definite on the complement
of the objective's exact null directions U (``H U = 0``, e.g. the CNN's output-bias sum):
``lambda_min(Q^T H Q) > 0`` for an orthonormal basis Q of that complement. Then theta is a
strict local minimum and the influence function and the LOO optima are defined (the null
directions change no prediction, and every gradient is orthogonal to them).

The fit: L-BFGS (float64, strong Wolfe) from a start, then trust-region Newton steps with the
exact Hessian (the objective's ``hessian``, dense: for networks small enough to form it),
solved through its eigendecomposition on the complement of U, so negative curvature is met
with a shifted step inside the trust region and a saddle is left, not converged to. A Hessian
costs ~dim gradients, an L-BFGS iteration about one: where the Hessian is indefinite, or
its step makes the gradient grow (the quadratic model does not hold: far from a minimum),
the accepted step is followed by another round of L-BFGS iterations instead of a Hessian per
step (at most ``max_rounds`` rounds); Newton steps finish where the model holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor


def complement_basis(U: Tensor | None, dim: int, dtype, device=None) -> Tensor:
    """(dim, dim - r) orthonormal basis of the complement of U's columns (identity if None)."""
    eye = torch.eye(dim, dtype=dtype, device=device)
    if U is None:
        return eye
    Q, _ = torch.linalg.qr(torch.cat([U.to(dtype), eye], 1))
    return Q[:, U.shape[1]:dim]


@dataclass
class Spectrum:
    """Extreme eigenvalues of the exact Hessian on the complement of the null directions."""

    lam_min: float
    lam_max: float
    null_dims: int
    null_residual: float  # max |H u| over the null directions (0 in exact arithmetic)
    smallest: list = field(default_factory=list)

    @property
    def positive_definite(self) -> bool:
        return self.lam_min > 0

    def summary(self) -> dict:
        return {"hessian_min_eigenvalue": self.lam_min, "hessian_max_eigenvalue": self.lam_max,
                "hessian_condition": self.lam_max / self.lam_min if self.lam_min > 0 else float("inf"),
                "smallest_eigenvalues": self.smallest, "null_directions": self.null_dims,
                "null_direction_residual": self.null_residual,
                "positive_definite": self.positive_definite}


def hessian_spectrum(H: Tensor, U: Tensor | None) -> Spectrum:
    """Eigenvalues of ``Q^T H Q`` (Q: complement of U) and how exactly U is a null space."""
    Q = complement_basis(U, H.shape[0], H.dtype, H.device)
    ev = torch.linalg.eigvalsh(Q.T @ H @ Q)
    res = 0.0 if U is None else float((H @ U.to(H.dtype)).abs().max())
    return Spectrum(float(ev[0]), float(ev[-1]), 0 if U is None else U.shape[1], res,
                    [float(v) for v in ev[:5]])


@dataclass
class CertifiedFit:
    """A certified fit: parameters, gradient certificate, curvature certificate, the path."""

    theta: Tensor
    grad_maxnorm: float
    loss: float
    lbfgs_iterations: int
    newton_steps: int
    lbfgs_rounds: int
    hessians: int
    converged: bool
    spectrum: Spectrum
    seconds: float
    newton_seconds: float

    def summary(self) -> dict:
        return {"grad_maxnorm": self.grad_maxnorm, "loss": self.loss,
                "iterations": self.lbfgs_iterations + self.newton_steps,
                "lbfgs_iterations": self.lbfgs_iterations, "lbfgs_rounds": self.lbfgs_rounds,
                "newton_steps": self.newton_steps,
                "hessians": self.hessians, "converged": self.converged, "seconds": self.seconds,
                "newton_seconds": self.newton_seconds, "is_local_minimum": self.spectrum.positive_definite,
                **self.spectrum.summary()}


def _lbfgs(obj, theta: Tensor, tol: float, max_iter: int) -> tuple[Tensor, int]:
    param = torch.nn.Parameter(theta.clone())
    opt = torch.optim.LBFGS([param], lr=1.0, max_iter=max_iter, history_size=50,
                            tolerance_grad=tol, tolerance_change=0.0, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss, g = obj.loss_and_grad(param.data)
        param.grad = g.clone()
        return loss

    if max_iter > 0:
        opt.step(closure)
    return param.data.detach().clone(), int(opt.state[param].get("n_iter", 0)) if max_iter > 0 else 0


def _lbfgs_round(obj, theta: Tensor, tol: float, max_iter: int):
    """L-BFGS from theta; returns (theta, loss, gradient, max|grad|, iterations)."""
    theta, k = _lbfgs(obj, theta, tol, max_iter)
    f, g = obj.loss_and_grad(theta)
    return theta, f, g, float(g.abs().max()), k


def _tr_step(evals: Tensor, coef: Tensor, radius: float) -> tuple[Tensor, float]:
    """Solution of ``min g.d + d.H d / 2, ||d|| <= radius`` in H's eigenbasis (coef = V^T g):
    ``d = -sum coef_j / (lam_j + mu) v_j``, ``mu = 0`` when H is definite and the Newton step
    fits, else the ``mu > max(0, -lam_min)`` that puts the step on the boundary (bisection on
    the secular equation). Returns (step coefficients, mu)."""
    lam0 = float(evals[0])
    if lam0 > 0:
        step = -coef / evals
        if float(step.norm()) <= radius:
            return step, 0.0
    lo = max(0.0, -lam0)
    hi = lo + float(coef.norm()) / radius + 1e-300
    for _ in range(200):
        mu = 0.5 * (lo + hi)
        if float((coef / (evals + mu)).norm()) > radius:
            lo = mu
        else:
            hi = mu
        if hi - lo <= 1e-15 * hi:
            break
    return -coef / (evals + hi), hi


def certified_fit(obj, theta0: Tensor, tol: float = 1e-9, lbfgs_tol: float = 1e-5,
                  max_lbfgs: int = 2000, max_newton: int = 40, radius: float = 1.0,
                  max_rounds: int = 8, log: Callable[[str], None] | None = None) -> CertifiedFit:
    """Fit a non-convex objective to a certified local minimum (module docstring).

    Newton steps reuse one Hessian while each step cuts the gradient max-norm by at least
    4x (chord steps, which converge fast so close to the minimum); a new Hessian is formed
    when they do not. Steps are accepted by the trust-region ratio of actual to predicted
    decrease; where F no longer resolves the decrease (near round-off), by a decrease of the
    gradient max-norm.
    """
    t0 = time.perf_counter()
    log = log or (lambda msg: None)
    theta, its = _lbfgs(obj, theta0.detach().clone(), lbfgs_tol, max_lbfgs)
    f, g = obj.loss_and_grad(theta)
    gm = float(g.abs().max())
    log(f"L-BFGS: {its} iterations, loss {float(f):.12g}, max|grad| {gm:.3g}")
    U = obj.null_space()
    Q = complement_basis(U, obj.dim, theta.dtype, theta.device)
    t1 = time.perf_counter()
    steps = hessians = 0
    rounds = 1
    evals = V = None
    fresh = False
    while True:
        while gm > tol and steps < max_newton:
            if evals is None:
                H = obj.hessian(theta)
                hessians += 1
                evals, W = torch.linalg.eigh(Q.T @ H @ Q)
                V = Q @ W
                fresh = True
            coef = V.T @ g
            dc, mu = _tr_step(evals, coef, radius)
            d = V @ dc
            pred = float(coef @ dc + 0.5 * (dc * evals * dc).sum())  # model decrease (< 0)
            f1, g1 = obj.loss_and_grad(theta + d)
            gm1 = float(g1.abs().max())
            actual = float(f1) - float(f)
            resolved = abs(pred) > 1e-13 * max(1.0, abs(float(f)))
            ok = (actual / pred > 0.1) if resolved else (gm1 < gm and actual <= 1e-14 * max(1.0, abs(float(f))))
            steps += 1
            if ok:
                ratio = gm1 / gm
                theta, f, g, gm = theta + d, f1, g1, gm1
                if resolved and actual / pred > 0.75 and float(d.norm()) > 0.9 * radius:
                    radius *= 2.0
                log(f"Newton step {steps}: loss {float(f):.15g}, max|grad| {gm:.3g}, |d| {float(d.norm()):.3g}, "
                    f"mu {mu:.3g}, lam_min {float(evals[0]):.3g}{' (new H)' if fresh else ''}")
                if (float(evals[0]) <= 0 or ratio > 1) and gm > tol and rounds < max_rounds:
                    # far from a minimum: cheap L-BFGS iterations instead of a Hessian per step
                    theta, f, g, gm, k = _lbfgs_round(obj, theta, lbfgs_tol, max_lbfgs)
                    its += k
                    rounds += 1
                    log(f"L-BFGS round {rounds} (the Hessian was {'indefinite' if float(evals[0]) <= 0 else 'not predictive'}): "
                        f"{k} iterations, loss {float(f):.12g}, max|grad| {gm:.3g}")
                    evals = None
                elif ratio > 0.25:  # slow: the next step gets a fresh Hessian
                    evals = None
            else:
                if not fresh:  # first try a Hessian at the current point, then shrink
                    evals = None
                else:
                    radius = 0.25 * float(d.norm())
                log(f"Newton step {steps} rejected (actual/predicted {actual / pred if pred else float('nan'):.3g}); "
                    f"radius {radius:.3g}")
            fresh = False
        Hf = obj.hessian(theta)
        hessians += 1
        spec = hessian_spectrum(Hf, U)
        if spec.positive_definite or rounds >= max_rounds or steps >= max_newton:
            break
        # a stationary point that is not a minimum (a saddle): leave it along the most negative
        # curvature direction, as far as the loss decreases, and go on with L-BFGS
        ev, W = torch.linalg.eigh(Q.T @ Hf @ Q)
        v = Q @ W[:, 0]
        if float(g @ v) > 0:
            v = -v
        alpha = radius
        for _ in range(40):
            f1, g1 = obj.loss_and_grad(theta + alpha * v)
            if float(f1) < float(f):
                break
            alpha *= 0.5
        theta, f, g, gm, k = _lbfgs_round(obj, theta + alpha * v, lbfgs_tol, max_lbfgs)
        its += k
        rounds += 1
        log(f"saddle (Hessian eigenvalue {float(ev[0]):.3g}): a step of {alpha:.3g} along its eigenvector, then "
            f"L-BFGS round {rounds}: {k} iterations, loss {float(f):.12g}, max|grad| {gm:.3g}")
        evals = None
    log(f"certificate: max|grad| {gm:.3g} (tol {tol:g}); Hessian on the complement of {spec.null_dims} null "
        f"direction(s): eigenvalues in [{spec.lam_min:.4g}, {spec.lam_max:.4g}]"
        + ("" if spec.positive_definite else " -- NOT positive definite: a saddle, not a minimum"))
    return CertifiedFit(theta, gm, float(f), its, steps, rounds, hessians, gm <= tol, spec,
                        time.perf_counter() - t0, time.perf_counter() - t1)
