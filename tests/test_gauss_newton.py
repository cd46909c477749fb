"""The Gauss-Newton influence (infcore.influence.gauss_newton_inverse, steps.influence_gn), the
certified CNN's second estimate beside CG's.

Tolerances: logistic regression's Gauss-Newton matrix is its Hessian, so the GN and CG
predictions are two float64 solves of one system, CG stopped at relative residual 1e-12: they
agree to ~1e-11 relative; 1e-9 leaves room for the condition number (~1e2 here). The CNN
check compares with an explicit solve of the same matrix (round-off times its condition
number: 1e-10 damped, 1e-6 undamped at condition ~1e10); the pseudo-inverse check with the
lambda -> 0 limit of damped solves (error lambda / lambda_min(kept)).
"""

from __future__ import annotations

import torch
from infcore.cnn.certified import CNNObjective
from infcore.cnn.model import init_params
from infcore.data import make_random
from infcore.fit import fit
from infcore.influence import gauss_newton_inverse
from infcore.selection import top_k
from infcore.steps import influence_cg, influence_gn, make_objective


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def test_logistic_gauss_newton_influence_equals_cg():
    """For a linear model G = H: influence_gn's predictions equal CG's (value, not only
    correlation), with and without damping, and it reports the agreement it measured."""
    ds = make_random(6, 3, 150, 10, seed=2, input_std=1.0)
    obj = make_objective(ds, {"model": "logreg", "l2": 0.01})
    theta = fit(obj, tol=1e-11).theta
    for damping in (0.0, 0.05):
        cg = {"tol": 1e-12, "maxiter": 500, "damping": damping, "preconditioner": "none"}
        pred_cg, _ = influence_cg(obj, theta, ds, 1, cg, log=lambda m: None)
        idx = top_k(pred_cg, 20)
        pred_gn, diag = influence_gn(obj, theta, ds, 1, idx, pred_cg, damping, log=lambda m: None)
        assert _rel(pred_gn, pred_cg[idx]) <= 1e-9
        assert diag["vs_cg_all"]["rel_difference"] <= 1e-9
        assert abs(diag["vs_cg_selected"]["slope"] - 1) <= 1e-8
        assert diag["gauss_newton_spectrum"]["null_directions"] == 0
        assert diag["damping"] == damping and diag["n_points"] == 20 and diag["n_train"] == 150


def test_logistic_gauss_newton_damping_is_applied():
    """Damping enters the GN solve: (G + l2 I + lambda I) s = g, checked against an explicit solve."""
    ds = make_random(4, 2, 80, 5, seed=3, input_std=1.0)
    obj = make_objective(ds, {"model": "logreg", "l2": 0.01})
    theta = fit(obj, tol=1e-11).theta
    g = obj.data_grad(theta, ds.X_test[:1], ds.y_test[:1])
    H = obj.data_hessian(theta) + 0.01 * torch.eye(obj.dim, dtype=torch.float64)
    for damping in (0.0, 0.3):
        s, _ = gauss_newton_inverse(obj, theta, g, damping=damping)
        want = torch.linalg.solve(H + damping * torch.eye(obj.dim, dtype=torch.float64), g)
        assert _rel(s, want) <= 1e-10


def _cnn():
    g = torch.Generator().manual_seed(5)
    X = torch.rand(30, 784, generator=g, dtype=torch.float64)
    y = torch.randint(10, (30,), generator=g)
    obj = CNNObjective(X, y, 0.01, width=1)
    theta = init_params(3, 1, dtype=torch.float64) + 0.05 * torch.randn(obj.dim, generator=g, dtype=torch.float64)
    return obj, theta, X


def test_cnn_gauss_newton_solve_matches_explicit_solve():
    """On a small CNN: the solve is the explicit solve of (G + diag(r) + U U^T + lambda I)."""
    obj, theta, X = _cnn()
    g = obj.data_grad(theta, X[:1] * 0.5, torch.tensor([3]))
    U = obj.null_space()
    M = obj.gauss_newton(theta) + torch.diag(obj.reg_diagonal()) + U @ U.T
    for damping in (0.0, 0.1):
        s, info = gauss_newton_inverse(obj, theta, g, damping=damping)
        assert info["null_directions"] == 0
        want = torch.linalg.solve(M + damping * torch.eye(obj.dim, dtype=torch.float64), g)
        assert _rel(s, want) <= 1e-6 if damping == 0 else _rel(s, want) <= 1e-10


class _SingularGN:
    """A Gauss-Newton matrix with two exact null directions N beyond the objective's, no L2
    there: the pseudo-inverse must drop them, and equal the lambda -> 0 limit on the range."""

    def __init__(self, dim=8, seed=0):
        g = torch.Generator().manual_seed(seed)
        Q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
        self.N = Q[:, :2]
        ev = torch.cat([torch.zeros(2, dtype=torch.float64), torch.linspace(0.5, 3.0, dim - 2, dtype=torch.float64)])
        self.G = Q @ torch.diag(ev) @ Q.T
        self.dim = dim

    def gauss_newton(self, theta):
        return self.G.clone()

    def reg_diagonal(self):
        return torch.zeros(self.dim, dtype=torch.float64)

    def null_space(self):
        return None


def test_gauss_newton_pseudo_inverse_is_the_zero_damping_limit():
    """Extra null directions are dropped (counted in the info), and for a right-hand side off
    them the answer is G^+ g, the limit of (G + lambda I)^{-1} g."""
    obj = _SingularGN()
    g = torch.randn(obj.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g = g - obj.N @ (obj.N.T @ g)
    s, info = gauss_newton_inverse(obj, None, g)
    assert info["null_directions"] == 2 and abs(info["min_eigenvalue"] - 0.5) < 1e-12
    assert _rel(s, torch.linalg.pinv(obj.G) @ g) <= 1e-12
    lam = 1e-6  # error lam / 0.5 = 2e-6, plus round-off in the null component, eps / lam ~ 1e-10
    assert _rel(s, torch.linalg.solve(obj.G + lam * torch.eye(obj.dim, dtype=torch.float64), g)) <= 5e-6
