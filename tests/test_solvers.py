"""Solvers for (H + lambda I) x = b against torch.linalg.solve."""

from __future__ import annotations

import pytest
import torch
from infcore.influence import inverse_hvp_cg, inverse_hvp_lissa, largest_example_eigenvalue
from infcore.solvers import (
    CGNotConvergedError,
    LissaDivergenceError,
    NotPositiveDefiniteError,
    cg,
    lissa,
    power_iteration,
    solve_explicit,
)


def spd(dim=30, cond=100.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    eig = torch.logspace(0, torch.log10(torch.tensor(cond)).item(), dim, dtype=torch.float64)
    b = torch.randn(dim, generator=g, dtype=torch.float64)
    return Q @ torch.diag(eig) @ Q.T, b


def test_explicit_matches_linalg_solve():
    H, b = spd()
    x = solve_explicit(H, b, damping=0.5)
    ref = torch.linalg.solve(H + 0.5 * torch.eye(30, dtype=torch.float64), b)
    assert (x - ref).abs().max() < 1e-12


def test_explicit_names_smallest_eigenvalue():
    H = torch.diag(torch.tensor([2.0, 1.0, -0.5], dtype=torch.float64))
    with pytest.raises(NotPositiveDefiniteError, match=r"smallest eigenvalue -0\.4"):
        solve_explicit(H, torch.ones(3, dtype=torch.float64), damping=0.1)


def test_cg_matches_linalg_solve_and_reports_history():
    H, b = spd()
    res = cg(lambda v: H @ v, b, damping=0.1, tol=1e-12)
    ref = torch.linalg.solve(H + 0.1 * torch.eye(30, dtype=torch.float64), b)
    assert res.converged and res.residual <= 1e-12
    assert len(res.residuals) == res.iterations + 1
    assert (res.x - ref).abs().max() / ref.abs().max() < 1e-10


def test_cg_reports_non_convergence():
    H, b = spd(cond=1e4)
    res = cg(lambda v: H @ v, b, tol=1e-12, maxiter=3)
    assert not res.converged and res.iterations == 3 and "maxiter" in res.message
    with pytest.raises(CGNotConvergedError, match="did not converge"):
        res.raise_if_not_converged()


def test_cg_breakdown_on_indefinite_matrix():
    H = torch.diag(torch.tensor([1.0, 2.0, -3.0], dtype=torch.float64))
    res = cg(lambda v: H @ v, torch.ones(3, dtype=torch.float64), tol=1e-12)
    assert not res.converged and "not positive definite" in res.message


def test_cg_preconditioner_same_answer_fewer_iterations(logistic_problem):
    obj, theta, Xt, yt = logistic_problem
    g = obj.data_grad(theta, Xt[:1], yt[:1])
    plain = inverse_hvp_cg(obj, theta, g, tol=1e-12)
    kfac = inverse_hvp_cg(obj, theta, g, tol=1e-12, preconditioner="kfac")
    assert plain.converged and kfac.converged
    assert (plain.x - kfac.x).abs().max() / plain.x.abs().max() < 1e-9
    assert kfac.iterations <= plain.iterations


def test_power_iteration():
    H, _ = spd(cond=50.0)
    assert power_iteration(lambda v: H @ v, 30, iters=2000, tol=1e-12) == pytest.approx(50.0, rel=1e-6)


def test_lissa_matches_solve_exact_hessian():
    H, b = spd(cond=10.0)
    res = lissa(lambda V, g: H @ V, b, depth=400, scale=15.0, repeats=2)
    ref = torch.linalg.solve(H, b)
    assert (res.x - ref).norm() / ref.norm() < 1e-8
    assert res.norm_trace and res.norm_trace[-1][0] == 400


def test_lissa_stochastic_within_tolerance(logistic_problem):
    obj, theta, Xt, yt = logistic_problem
    g = obj.data_grad(theta, Xt[:1], yt[:1])
    ref = torch.linalg.solve(obj.hessian(theta), g)
    lam = largest_example_eigenvalue(obj, theta)
    res = inverse_hvp_lissa(obj, theta, g, depth=3000, scale=1.2 * lam, repeats=20, batch_size=10, seed=3)
    assert (res.x - ref).norm() / ref.norm() < 0.05  # stated tolerance: 5 % relative error


def test_lissa_divergence_names_scale_and_eigenvalue(logistic_problem):
    obj, theta, Xt, yt = logistic_problem
    g = obj.data_grad(theta, Xt[:1], yt[:1])
    lam = power_iteration(lambda v: obj.hvp(theta, v), obj.dim, iters=500)
    scale = round(lam / 10, 4)
    with pytest.raises(LissaDivergenceError, match=rf"scale = {scale:g} must exceed.*estimate") as err:
        inverse_hvp_lissa(obj, theta, g, depth=2000, scale=scale, repeats=2, batch_size=50)
    assert f"estimate {lam:.4g}" in str(err.value)
