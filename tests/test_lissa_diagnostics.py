"""infcore.lissa_diagnostics: contraction regime, depth needed, norm-trace check (issue 15)."""

from __future__ import annotations

import math

import pytest
from infcore.lissa_diagnostics import (
    DEPTH_TOL,
    TRACE_TOL,
    contraction_factor,
    contraction_regime,
    depth_needed,
    lissa_diagnostics,
    panel_note,
    tail_growth,
)


def test_contraction_regime():
    # MNIST, L2 0.01 (measured): lambda_max 2.30, largest single-point eigenvalue 99.5, scale 25
    assert contraction_regime(25.0, 2.298, 99.51) == "expected_only"
    assert contraction_regime(25.0, 2.298, 20.0) == "per_step"
    assert contraction_regime(25.0, 2.298, 25.0) == "per_step"  # boundary: no step expands
    assert contraction_regime(25.0, 2.298, None) == "expected_only"  # single points unknown
    assert contraction_regime(25.0, 50.0, 99.5) == "divergent"  # scale <= lambda_max / 2
    assert contraction_regime(25.0, 49.0, 99.5) == "expected_only"


def test_contraction_factor_and_depth_needed():
    assert contraction_factor(25.0, 0.01, 2.3) == pytest.approx(0.9996, abs=1e-15)
    assert contraction_factor(25.0, 5.0, 49.5) == pytest.approx(0.98)  # |1 - 49.5/25| dominates
    # the paper's scale and L2 0.01: 11,511 steps until 0.9996^depth <= 0.01
    n = depth_needed(0.9996, 0.01)
    assert n == 11511 and 0.9996 ** n <= 0.01 < 0.9996 ** (n - 1)
    assert depth_needed(1 - 0.001 / 25, DEPTH_TOL) == 115127  # L2 0.001
    assert depth_needed(1.0) is None and depth_needed(1.2) is None
    assert depth_needed(0.5, 0.25) == 2 and depth_needed(0.0) == 1


def test_tail_growth():
    linear = [(s, float(s)) for s in range(1, 101)]
    # last tenth 91..100 (mean 95.5) vs 81..90 (mean 85.5)
    assert tail_growth(linear) == pytest.approx(10.0 / 95.5)
    flat = [(s, 3.0) for s in range(100)]
    assert tail_growth(flat) == 0.0
    decreasing = [(s, 100.0 - s) for s in range(100)]
    assert tail_growth(decreasing) == pytest.approx((5.5 - 15.5) / 5.5)
    assert tail_growth([(1, 1.0)]) == 0.0  # too short to tell


def _geometric_trace(rho, depth, points=100):
    """Norm trace of the mean recursion on one eigendirection: sum_{j<=t} rho^j."""
    return [(t, (1 - rho ** (t + 1)) / (1 - rho)) for t in range(depth // points, depth + 1, depth // points)]


def test_truncated_run_at_small_l2_is_flagged():
    """L2 0.001, the paper's scale 25 and depth 5,000 (the issue's case)."""
    d = lissa_diagnostics(scale=25.0, depth=5000, batch_size=1, l2=0.001, damping=0.0,
                          largest_eigenvalue=1.554, largest_example_eigenvalue=104.6,
                          norm_trace=_geometric_trace(1 - 0.001 / 25, 5000))
    assert d["lambda_min_bound"] == 0.001
    assert d["contraction_regime"] == "expected_only"
    assert d["depth_needed"] == 115127
    assert d["remaining_slowest"] == pytest.approx(math.exp(5000 * math.log1p(-4e-5)))  # 0.819
    assert d["tail_growth"] == pytest.approx(0.0960, abs=5e-4)  # still growing
    assert d["converged"] is False
    assert d["status"] == "not converged: depth 5,000, needs ~115,127"
    assert len(d["warnings"]) == 3
    assert "below the largest single-point eigenvalue 104.6" in d["warnings"][0]
    assert "batch size 1: the contraction condition is violated" in d["warnings"][0]
    assert "depth 5,000 is below the ~115,127 steps" in d["warnings"][1]
    assert "+9.60%" in d["warnings"][2]
    assert panel_note(d) == "not converged: depth 5,000, needs ~115,127; scale below single-point eigenvalue"


def test_converged_run_in_per_step_regime_is_not_flagged():
    rho = 1 - 0.1 / 10
    d = lissa_diagnostics(scale=10.0, depth=1000, batch_size=5, l2=0.1, damping=0.0,
                          largest_eigenvalue=0.21, largest_example_eigenvalue=4.26,
                          norm_trace=_geometric_trace(rho, 1000))
    assert d["depth_needed"] == 459 and d["contraction_regime"] == "per_step"
    assert d["converged"] is True and d["status"] == "converged" and d["warnings"] == []
    assert abs(d["tail_growth"]) < 1e-3 and panel_note(d) is None


def test_deep_enough_but_trace_still_moving():
    trace = [(s, 1.0 + 0.01 * s) for s in range(1, 101)]
    d = lissa_diagnostics(scale=10.0, depth=1000, batch_size=1, l2=0.1, damping=0.0,
                          largest_eigenvalue=0.2, largest_example_eigenvalue=4.0, norm_trace=trace)
    assert d["tail_growth"] > TRACE_TOL
    assert d["converged"] is False
    assert d["status"] == "not converged: norm still changing +5.1% at depth 1,000"  # 0.1 / 1.955


def test_damping_raises_the_bound_and_divergent_scale_is_named():
    d = lissa_diagnostics(scale=1.0, depth=100, batch_size=1, l2=0.01, damping=0.09,
                          largest_eigenvalue=3.0, largest_example_eigenvalue=None,
                          norm_trace=[(s, 1.0) for s in range(1, 101)])
    assert d["lambda_min_bound"] == pytest.approx(0.1)
    assert d["contraction_regime"] == "divergent" and d["depth_needed"] is None
    assert d["status"] == "not converged: depth 100, needs ~none suffices"
    assert "diverges even in expectation" in d["warnings"][0]


def test_non_convex_objective_has_no_depth_bound():
    rising = [(s, 1.0 + 0.01 * s) for s in range(1, 101)]
    flat = [(s, 2.0) for s in range(1, 101)]
    kw = dict(scale=10.0, depth=1000, batch_size=1, l2=0.001, damping=0.0, largest_eigenvalue=0.2,
              largest_example_eigenvalue=None, convex=False)
    d = lissa_diagnostics(norm_trace=flat, **kw)
    assert d["lambda_min_bound"] is None and d["depth_needed"] is None and d["remaining_slowest"] is None
    assert d["converged"] is True and d["status"] == "converged"
    assert any("non-convex objective: no lower bound on lambda_min" in w for w in d["warnings"])
    assert panel_note(d) is None  # single-point eigenvalue unknown: not known to be violated
    d = lissa_diagnostics(norm_trace=rising, **kw)
    assert d["converged"] is False and d["status"] == "not converged: norm still changing +5.1% at depth 1,000"


def test_small_problem_at_l2_0001_is_truncated_and_flagged():
    """A real LiSSA run on a small logistic problem: at L2 0.001 the depth is far too short
    (its estimate is 39% off the CG solution) and the diagnostics say so; at L2 0.1 it has
    converged (only the sampling noise of 2 repeats is left) and they do not."""
    import torch
    from infcore.data import make_random
    from infcore.fit import fit
    from infcore.influence import inverse_hvp_cg, inverse_hvp_lissa, largest_example_eigenvalue
    from infcore.objective import LogisticObjective
    from infcore.solvers import power_iteration

    ds = make_random(20, 3, 300, 50, seed=3, input_std=0.5)
    out = {}
    for l2, depth in ((0.001, 500), (0.1, 1000)):
        obj = LogisticObjective(ds.X_train, ds.y_train, 3, l2)
        theta = fit(obj, tol=1e-10).theta
        g = obj.data_grad(theta, ds.X_test[:1], ds.y_test[:1])
        lam = power_iteration(lambda v, o=obj, t=theta: o.hvp(t, v), obj.dim, iters=100, tol=1e-3,
                              seed=17, dtype=theta.dtype)
        res = inverse_hvp_lissa(obj, theta, g, depth=depth, scale=10.0, repeats=2, batch_size=5, seed=17)
        exact = inverse_hvp_cg(obj, theta, g).x
        d = lissa_diagnostics(scale=10.0, depth=depth, batch_size=5, l2=l2, damping=0.0,
                              largest_eigenvalue=lam,
                              largest_example_eigenvalue=largest_example_eigenvalue(obj, theta),
                              norm_trace=res.norm_trace)
        out[l2] = (d, float(torch.linalg.vector_norm(res.x - exact) / torch.linalg.vector_norm(exact)))
    d, err = out[0.001]
    assert err > 0.3  # measured 0.39: truncated
    assert d["converged"] is False and d["depth_needed"] == 46050
    assert d["status"] == "not converged: depth 500, needs ~46,050"
    assert d["tail_growth"] > TRACE_TOL  # measured +5.6%: the run itself shows it
    d, err = out[0.1]
    assert err < 0.15  # measured 0.080
    assert d["converged"] is True and d["contraction_regime"] == "per_step"


def test_lissa_step_warns_when_truncated_at_l2_0001():
    """The workflow's LiSSA step (rule influence_lissa) at L2 0.001 on a small problem: it
    warns, logs the verdict, and its JSON record says so (the issue's silent truncation)."""
    import torch
    from infcore.data import make_random
    from infcore.steps import influence_lissa, make_objective, train

    ds = make_random(20, 3, 300, 50, seed=3, input_std=0.5)
    obj = make_objective(ds, {"model": "logreg", "l2": 0.001})
    theta, _ = train(obj, ds, {"tol": 1e-10, "max_lbfgs": 500, "max_newton": 30}, log=lambda m: None)
    lissa = {"depth": 500, "scale": 10.0, "repeats": 2, "batch_size": 5, "damping": 0.0, "seed": 17}
    logs = []
    with pytest.warns(UserWarning, match=r"LiSSA at test point 0: depth 500 is below the ~46,050 steps"):
        _, diag = influence_lissa(obj, theta, ds, 0, torch.arange(40), lissa, log=logs.append)
    check = diag["convergence"]
    assert check["converged"] is False and check["depth_needed"] == 46050
    assert check["lambda_min_bound"] == 0.001 and check["contraction_regime"] == "per_step"
    assert diag["note"] == "not converged: depth 500, needs ~46,050"
    assert "LiSSA: not converged: depth 500, needs ~46,050; contraction regime per_step" in logs
