"""The sign and scale contract: predictions against real leave-one-out retraining."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from infcore.fit import fit
from infcore.influence import inverse_hvp_cg, predicted_loss_change
from infcore.loo import LooSolver, chord_factor, loo_retrain
from infcore.metrics import agreement, pearson, slope, spearman
from infcore.objective import LogisticObjective
from infcore.selection import top_k
from problems import make_logistic


def test_fit_certificate():
    obj, _, _ = make_logistic(n=200, d=6, k=3)
    res = fit(obj, tol=1e-10)
    assert res.converged and res.grad_maxnorm <= 1e-10
    assert obj.grad(res.theta).abs().max() <= 1e-10


@pytest.mark.parametrize("k", [2, 3])
def test_predicted_vs_actual_loo_every_point(k):
    """Pearson >= 0.99 and slope in 0.9..1.1 over every training point (docs/design.md contract)."""
    obj, Xt, yt = make_logistic(n=300, d=4, k=k, seed=k)
    theta = fit(obj, tol=1e-12).theta
    x_test, y_test = Xt[:1], yt[:1]
    s = inverse_hvp_cg(obj, theta, obj.data_grad(theta, x_test, y_test), tol=1e-12).raise_if_not_converged().x
    pred = predicted_loss_change(obj, theta, s)
    loo = loo_retrain(obj, theta, torch.arange(obj.n), tol=1e-10)
    assert loo.converged.all() and loo.grad_maxnorm.max() <= 1e-10
    actual = obj.data_loss(loo.thetas, x_test, y_test) - obj.data_loss(theta, x_test, y_test)
    a = agreement(pred, actual)
    assert a["pearson"] >= 0.99, a
    assert 0.9 <= a["slope"] <= 1.1, a
    # sign: the point with the largest predicted increase really increases the test loss
    i = int(pred.argmax())
    assert actual[i] > 0


def test_loo_matches_refit_from_scratch():
    obj, _, _ = make_logistic(n=120, d=5, k=3, seed=4)
    theta = fit(obj, tol=1e-12).theta
    idx = torch.tensor([0, 17, 119])
    loo = loo_retrain(obj, theta, idx, tol=1e-11)
    for j, i in enumerate(idx.tolist()):
        keep = torch.ones(obj.n, dtype=torch.bool)
        keep[i] = False
        ref = fit(LogisticObjective(obj.X[keep], obj.y[keep], 3, obj.l2), tol=1e-12).theta
        assert (loo.thetas[j] - ref).abs().max() < 1e-9
        loo_obj = LogisticObjective(obj.X[keep], obj.y[keep], 3, obj.l2)
        assert loo_obj.grad(loo.thetas[j]).abs().max() <= 1e-11  # certificate is the real gradient


@pytest.mark.parametrize("woodbury", [True, False])
def test_loo_batching_and_woodbury_do_not_change_the_answer(woodbury):
    obj, _, _ = make_logistic(n=80, d=6, k=3, seed=5, scale=2.0)
    theta = fit(obj, tol=1e-12).theta
    idx = torch.arange(obj.n)
    solver = LooSolver(obj, theta, woodbury=woodbury)
    one = torch.stack([solver.run(idx[i:i + 1]).thetas[0] for i in range(0, obj.n, 9)])
    batched = solver.run(idx, chunk=16)
    assert batched.converged.all()
    assert (batched.thetas[::9] - one).abs().max() < 1e-9


def test_loo_rejects_bad_index():
    obj, _, _ = make_logistic(n=30, d=3, k=2)
    theta = fit(obj).theta
    with pytest.raises(IndexError, match=r"\[0, 30\)"):
        loo_retrain(obj, theta, [3, 30])


def test_metrics_known_values():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    assert pearson(a, 2 * a + 1) == pytest.approx(1.0)
    assert pearson(a, -a) == pytest.approx(-1.0)
    assert spearman(a, a ** 3) == pytest.approx(1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)
    assert slope(3 * a, a) == pytest.approx(3.0)
    assert pearson([1.0, 2.0, 4.0], [1.0, 3.0, 2.0]) == pytest.approx(1 / np.sqrt(84 / 9))


def test_top_k_order_and_errors():
    pred = torch.tensor([0.1, -0.5, 0.5, 0.0, 0.3])
    assert top_k(pred, 3).tolist() == [1, 2, 4]
    with pytest.raises(ValueError, match="k = 6"):
        top_k(pred, 6)


def test_precomputed_float32_factor_gives_same_certified_answer():
    obj, _, _ = make_logistic(n=150, d=5, k=3, seed=6)
    theta = fit(obj, tol=1e-12).theta
    idx = torch.arange(0, 150, 7)
    ref = loo_retrain(obj, theta, idx)
    L32 = chord_factor(obj, theta).float()
    res = loo_retrain(obj, theta, idx, factor=L32)
    assert res.converged.all() and (res.thetas - ref.thetas).abs().max() < 1e-9


def test_mixed_precision_and_explicit_inverse_give_the_float64_answer():
    """Float32 steering passes, the explicit M^{-1} over the coupled dims (zero input columns
    left out), Neumann self-curvature and straggler batches: same certified optima as the
    all-float64 path, which agrees with a refit from scratch."""
    from problems import make_sparse_logistic

    obj = make_sparse_logistic(n=3000, d=66, k=8, seed=2, window=20)
    assert obj.dim >= 512
    theta = fit(obj, tol=1e-12).theta
    idx = torch.arange(0, 3000, 150)  # 20 points: 40 * 20 >= dim, so M^{-1} is formed
    mixed = LooSolver(obj, theta, precision="mixed", woodbury=False)
    res = mixed.run(idx, tol=1e-11, chunk=6)
    res5 = mixed.run(idx, tol=1e-11, chunk=5)  # stragglers joined, then split to <= chunk
    assert (res5.thetas - res.thetas).abs().max() < 1e-9
    assert mixed._Minv is not None and mixed._Minv.shape[0] < obj.dim
    assert res.converged.all() and res.grad_maxnorm.max() <= 1e-11
    assert res.passes32.sum() > 0 and (res.passes64 >= 1).all()
    ref = LooSolver(obj, theta, precision="float64", woodbury=False).run(idx, tol=1e-11)
    assert ref.passes32.sum() == 0
    # float32 round-off never stalls the iteration: at most 2 more steps than all-float64
    assert (res.steps <= ref.steps + 2).all() and (res5.steps <= ref.steps + 2).all()
    assert (res.thetas - ref.thetas).abs().max() < 1e-9
    i = int(idx[3])
    keep = torch.ones(obj.n, dtype=torch.bool)
    keep[i] = False
    loo_obj = LogisticObjective(obj.X[keep], obj.y[keep], obj.n_classes, obj.l2)
    assert loo_obj.grad(res.thetas[3]).abs().max() <= 1e-11
    assert (fit(loo_obj, tol=1e-12).theta - res.thetas[3]).abs().max() < 1e-9


def test_loo_precision_is_validated():
    obj, _, _ = make_logistic(n=30, d=3, k=2)
    theta = fit(obj).theta
    with pytest.raises(ValueError, match="precision must be"):
        LooSolver(obj, theta, precision="half")
