"""LOO for objectives that are not convex (the certified CNN's path in infcore.loo), and the
chord factor as CG's preconditioner, on problems small enough to run in the fast tier.

The non-convex path (per-point L-BFGS from theta_hat with the chord matrix as its initial
inverse Hessian, a line search that never leaves descent) is taken for any objective whose
``convex`` is False. Run on logistic regression marked non-convex, its optima must equal the
convex path's chord-Newton optima: both are certified to max|grad F_-i| <= 1e-11 on a strictly
convex objective (smallest eigenvalue >= l2 = 0.01), so they differ by at most 1e-11 / 0.01.
"""

import pytest
import torch
from infcore.fit import fit
from infcore.influence import inverse_hvp_cg
from infcore.loo import chord_factor, loo_retrain
from infcore.objective import LogisticObjective
from problems import make_logistic

TOL = 1e-11


class MarkedNonConvex(LogisticObjective):
    """Logistic regression that reports ``convex = False``: the non-convex LOO path on a
    problem whose LOO optima are known from the convex path."""

    convex = False

    def __init__(self, X, y, n_classes, l2):
        super().__init__(X, y, n_classes, l2)
        self._args = (n_classes, l2)

    def without(self, i: int):
        keep = torch.ones(self.n, dtype=torch.bool)
        keep[int(i)] = False
        return MarkedNonConvex(self.X[keep], self.y[keep], *self._args)


@pytest.fixture(scope="module")
def problem():
    obj, Xt, yt = make_logistic(n=120, d=6, k=3, l2=0.01, seed=3)
    theta = fit(obj, tol=1e-13).theta
    marked = MarkedNonConvex(obj.X, obj.y, 3, 0.01)
    return obj, marked, theta, Xt, yt


def test_nonconvex_path_reaches_the_convex_optima(problem):
    obj, marked, theta, _, _ = problem
    idx = torch.tensor([0, 7, 31, 119])
    ref = loo_retrain(obj, theta, idx, tol=TOL, hessian_dtype=torch.float64)
    res = loo_retrain(marked, theta, idx, tol=TOL, hessian_dtype=torch.float64, max_steps=200)
    assert bool(res.converged.all()) and float(res.grad_maxnorm.max()) <= TOL
    for j, i in enumerate(idx.tolist()):  # the certificate is the LOO objective's own gradient
        assert float(marked.without(i).grad(res.thetas[j]).abs().max()) <= TOL
    # |dtheta| <= (|grad_a| + |grad_b|) / lambda_min, lambda_min >= l2 = 0.01
    assert float((res.thetas - ref.thetas).abs().max()) <= 2 * TOL / 0.01 * 10
    # the basin check's yardstick: the optimum lies about one influence step away (measured
    # 1.03-1.15 at n = 120: the second-order terms of removing 1 of 120 points)
    ratio = res.distance / res.first_step
    assert bool(((ratio - 1).abs() < 0.25).all()), ratio
    assert bool((res.steps >= 1).all()) and bool((res.steps < 50).all())


def test_nonconvex_path_reports_a_point_it_cannot_certify(problem):
    """A budget too small to certify: the point comes back unconverged with its honest
    certificate (> tol), not a silent success."""
    _, marked, theta, _, _ = problem
    res = loo_retrain(marked, theta, torch.tensor([7]), tol=1e-14, hessian_dtype=torch.float64,
                      max_steps=1)
    assert not bool(res.converged[0]) and float(res.grad_maxnorm[0]) > 1e-14
    assert int(res.steps[0]) == 1
    # and the number it reports is the LOO objective's gradient at the returned iterate
    g = float(marked.without(7).grad(res.thetas[0]).abs().max())
    assert abs(g - float(res.grad_maxnorm[0])) <= 1e-12 + 1e-9 * g


def test_chord_factor_preconditions_cg_to_the_same_solution(problem):
    """CG preconditioned by the LOO chord factor solves H s = g exactly as plain CG does (same
    system; the factor is (n/(n-1)) H + l2, a near-exact preconditioner: few iterations)."""
    obj, _, theta, Xt, yt = problem
    g = obj.data_grad(theta, Xt[:1], yt[:1])
    plain = inverse_hvp_cg(obj, theta, g, tol=1e-12)
    L = chord_factor(obj, theta, hessian_dtype=torch.float32)
    pre = inverse_hvp_cg(obj, theta, g, tol=1e-12, preconditioner="chord", factor=L)
    assert pre.converged and plain.converged
    assert float((pre.x - plain.x).norm() / plain.x.norm()) <= 1e-10
    assert pre.iterations <= 5 < plain.iterations or pre.iterations < plain.iterations
    # the solution solves the system (not only matches plain CG)
    assert float((obj.hvp(theta, pre.x) - g).norm() / g.norm()) <= 1e-11
    with pytest.raises(ValueError, match="chord factor"):
        inverse_hvp_cg(obj, theta, g, preconditioner="chord")


def test_nonconvex_path_stops_a_point_that_leaves_the_basin(problem, monkeypatch):
    """With the basin limit below the distance the optimum lies at (about one influence step),
    every point stops uncertified and flagged, with the distance it reached reported."""
    import infcore.loo as loo

    _, marked, theta, _, _ = problem
    monkeypatch.setattr(loo, "BASIN_LIMIT", 0.5)
    res = loo_retrain(marked, theta, torch.tensor([0, 7]), tol=TOL, hessian_dtype=torch.float64,
                      max_steps=200)
    assert bool(res.left_basin.all()) and not bool(res.converged.any())
    assert bool((res.distance > 0.5 * res.first_step).all())
    assert res.summary()["left_basin"] == 2


def test_figures_leave_uncertified_points_out_with_a_note():
    """loo.csv rows read back as strings: a point with converged 'False' is not plotted (it has
    no certified actual change) and the note counts it; certified rows pass through."""
    from infcore.tables import figure_rows, panel_stats, uncertified_note

    selection = [{"rank": r, "train_index": i, "train_label": 1, "predicted": p}
                 for r, (i, p) in enumerate([(4, 0.3), (9, -0.2), (2, 0.1)])]
    loo = [{"train_index": "4", "test_index": "5", "actual": "0.29", "grad_maxnorm": "1e-10", "converged": "True",
            "left_basin": "False"},
           {"train_index": "9", "test_index": "5", "actual": "0.5", "grad_maxnorm": "3e-2", "converged": "False",
            "left_basin": "True"},
           {"train_index": "2", "test_index": "5", "actual": "0.11", "grad_maxnorm": "2e-10", "converged": "True",
            "left_basin": "False"}]
    rows = figure_rows("e", 5, selection, {4: 0.31, 9: -0.1, 2: 0.09}, loo)
    assert sorted({r["train_index"] for r in rows}) == [2, 4] and len(rows) == 4
    assert all(s["n_points"] == 2 for s in panel_stats(rows))
    assert uncertified_note(5, selection, loo) == "1 of 3 LOO not certified (1 left the basin), not shown"
    assert uncertified_note(5, selection, [dict(r, converged="True") for r in loo]) is None
    linear = [{k: v for k, v in r.items() if k not in ("converged", "left_basin")} for r in loo]
    assert len(figure_rows("e", 5, selection, {4: 0.31, 9: -0.1, 2: 0.09}, linear)) == 6
