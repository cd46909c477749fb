"""Tests of infcore.cnn (the CNN of Figure 2): fast, CPU, float64 on tiny instances.

The tiny instance keeps the paper's architecture and 28x28 inputs but uses width 2
(312 parameters), so explicit Hessians are cheap.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from infcore import cnn
from infcore.cnn.train import _masked_objective
from infcore.solvers import cg, solve_explicit

W = 2  # tiny width
DT = torch.float64
L2 = 1e-3


def tiny_data(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g, dtype=DT)
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y


def test_paper_model_has_2616_parameters_and_module_layout():
    assert cnn.num_params() == 2616
    model = cnn.AllCNNC()
    assert sum(p.numel() for p in model.parameters()) == 2616
    theta = cnn.init_params(3)
    cnn.load_flat(model, theta)
    assert torch.equal(cnn.flatten_module(model), theta)
    x = torch.rand(5, 1, 28, 28)
    torch.testing.assert_close(cnn.stacked_logits(theta, x), model(x))
    mask = cnn.weight_mask()
    n_bias = sum(co for _, co, _, _ in cnn.layer_specs()) + 10
    assert int(mask.sum()) == 2616 - n_bias


def test_init_matches_original_scales():
    """Weights ~ N(0, sigma^2) truncated at +-2 sigma (sigma = 2/sqrt(fan_in) for convolutions,
    1/sqrt(n_classes) for the linear layer): the standardized weights' std must be the
    truncated normal's, c = sqrt(1 - 4 phi(2) / (Phi(2) - Phi(-2))) = 0.8796, to 5 standard
    errors (1/sqrt(2N) for N draws, normal kurtosis: conservative for the truncated one) per
    tensor and pooled; every |w| <= 2 sigma and, pooled (N = 2,600), some |w| >= 1.9 sigma
    (a correct init misses that with probability e^-32); mean 0 to 5 c / sqrt(N); biases 0."""
    import math

    theta = cnn.init_params(0, dtype=DT)
    ps = cnn.split_params(theta)
    phi2 = math.exp(-2) / math.sqrt(2 * math.pi)
    c = math.sqrt(1 - 4 * phi2 / math.erf(2 / math.sqrt(2)))
    assert c == pytest.approx(0.8796, abs=1e-4)
    sigmas = {0: 2 / np.sqrt(9), 2: 2 / np.sqrt(72), 10: 2 / np.sqrt(8), 12: 1 / np.sqrt(10)}
    assert [i for i, p in enumerate(ps) if p.ndim > 1] == [0, 2, 4, 6, 8, 10, 12]
    sigmas.update({4: 2 / np.sqrt(72), 6: 2 / np.sqrt(72), 8: 2 / np.sqrt(72)})
    pooled = []
    for i, sigma in sigmas.items():
        z = (ps[i] / sigma).reshape(-1)
        n = z.numel()
        assert float(z.abs().max()) <= 2 + 1e-12, i
        assert abs(float(z.std()) - c) <= 5 / math.sqrt(2 * n), (i, float(z.std()))
        assert abs(float(z.mean())) <= 5 * c / math.sqrt(n), (i, float(z.mean()))
        pooled.append(z)
    z = torch.cat(pooled)
    assert abs(float(z.std()) - c) <= 5 / math.sqrt(2 * z.numel()), float(z.std())
    assert float(z.abs().max()) >= 1.9
    assert all(float(b.abs().max()) == 0 for b in ps[1::2])


@pytest.mark.parametrize("impl", ["grouped", "loop"])
def test_stacked_forward_equals_separate_models(impl):
    x, _ = tiny_data(6)
    thetas = torch.stack([cnn.init_params(s, width=W, dtype=DT) for s in range(4)])
    out = cnn.stacked_logits(thetas, x, W, impl=impl)
    for j in range(4):
        model = cnn.load_flat(cnn.AllCNNC(width=W).to(DT), thetas[j])
        torch.testing.assert_close(out[j], model(x), rtol=1e-12, atol=1e-12)


def test_hvp_matches_explicit_hessian():
    """Double-backward HVP in uneven minibatches == explicit Hessian of L (with L2 term)."""
    x, y = tiny_data(7)
    theta = cnn.init_params(1, width=W, dtype=DT) + 0.05 * torch.randn(
        cnn.num_params(W), generator=torch.Generator().manual_seed(5), dtype=DT)
    H = torch.func.hessian(lambda p: cnn.objective(p, x, y, L2, width=W))(theta)
    torch.testing.assert_close(H, H.T, rtol=0, atol=1e-12)
    mv = cnn.make_hvp(theta, x, y, L2, batch_size=3, width=W)  # batches 3, 3, 1
    mv_full = cnn.make_hvp(theta, x, y, L2, batch_size=7, width=W)
    V = torch.randn(cnn.num_params(W), 3, generator=torch.Generator().manual_seed(2), dtype=DT)
    for k in range(3):
        torch.testing.assert_close(mv(V[:, k]), H @ V[:, k], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(mv_full(V[:, k]), H @ V[:, k], rtol=1e-10, atol=1e-12)


def test_train_point_dots_equal_per_example_gradients():
    x, y = tiny_data(9)
    theta = cnn.init_params(2, width=W, dtype=DT)
    s = torch.randn(cnn.num_params(W), generator=torch.Generator().manual_seed(0), dtype=DT)
    G = cnn.per_example_grads(theta, x, y, L2, width=W)
    # one point's gradient by plain autograd, as a check of per_example_grads itself
    p = theta.clone().requires_grad_(True)
    li = F.cross_entropy(cnn.stacked_logits(p, x[4:5], W), y[4:5]) + 0.5 * L2 * (
        (p * cnn.weight_mask(W, dtype=DT)) ** 2).sum()
    torch.testing.assert_close(G[4], torch.autograd.grad(li, p)[0])
    torch.testing.assert_close(cnn.train_point_dots(theta, s, x, y, L2, W, chunk=4), G @ s,
                               rtol=1e-10, atol=1e-12)


def test_damping_makes_cg_converge_where_hessian_is_indefinite():
    """Undamped: H has negative eigenvalues and CG breaks down (p^T H p <= 0).
    Damped with lambda above |lambda_min|: CG converges to the explicit solution."""
    x, y = tiny_data(8)
    theta = cnn.init_params(0, width=W, dtype=DT)
    H = torch.func.hessian(lambda p: cnn.objective(p, x, y, L2, width=W))(theta)
    evals = torch.linalg.eigvalsh(H)
    assert evals[0] < -1.0 < 1.0 < evals[-1]  # clearly indefinite
    b = cnn.loss_grad(theta, x[:1], y[:1], W)
    mv = cnn.make_hvp(theta, x, y, L2, batch_size=4, width=W)

    mon0 = cnn.CurvatureMonitor(mv)
    undamped = cg(mon0, b, damping=0.0, tol=1e-10, maxiter=500)
    assert not undamped.converged
    assert "breakdown" in undamped.message
    assert mon0.min_curvature < 0

    lam = 1.5 * float(-evals[0])
    mon = cnn.CurvatureMonitor(mv, damping=lam)
    damped = cg(mon, b, damping=lam, tol=1e-10, maxiter=500)
    assert damped.converged and damped.iterations < 100
    assert mon.min_curvature > 0
    x_ref = solve_explicit(H, b, damping=lam)
    torch.testing.assert_close(damped.x, x_ref, rtol=1e-8, atol=1e-10)


def test_influence_matches_explicit_formula():
    """pred_i = (1/n) g_i^T (H + lambda I)^-1 g_test, with the regularised g_i."""
    x, y = tiny_data(6)
    xt, yt = tiny_data(1, seed=9)
    theta = cnn.init_params(0, width=W, dtype=DT)
    H = torch.func.hessian(lambda p: cnn.objective(p, x, y, L2, width=W))(theta)
    lam = 1.5 * float(-torch.linalg.eigvalsh(H)[0])
    res = cnn.influence(theta, x, y, xt, yt, l2=L2, damping=lam, hvp_batch_size=4,
                        tol=1e-12, maxiter=500, width=W)
    assert res.cg.converged
    g_test = cnn.loss_grad(theta, xt, yt, W)
    G = cnn.per_example_grads(theta, x, y, L2, width=W)
    pred_ref = G @ solve_explicit(H, g_test, damping=lam) / x.shape[0]
    torch.testing.assert_close(res.pred, pred_ref, rtol=1e-8, atol=1e-12)
    assert res.test_loss == pytest.approx(float(F.cross_entropy(
        cnn.stacked_logits(theta, xt, W), yt)))


def test_lr_schedule_and_batch_stream():
    assert cnn.lr_at(0) == 1e-4
    assert cnn.lr_at(109_999) == 1e-4
    assert cnn.lr_at(110_000) == pytest.approx(1e-5)
    assert cnn.lr_at(499_999) == pytest.approx(1e-6)
    batches = list(cnn.batch_stream(10, 3, 7, seed=4))
    assert all(b.numel() == 3 for b in batches)
    for e in range(2):  # 3 batches per epoch, tail of 1 skipped; no repeats within an epoch
        assert len(set(torch.cat(batches[3 * e:3 * e + 3]).tolist())) == 9
    resumed = list(cnn.batch_stream(10, 3, 3, seed=4, start_step=4))
    assert all(torch.equal(a, b) for a, b in zip(resumed, batches[4:], strict=True))


def test_masked_full_batch_objective_is_loo_objective():
    x, y = tiny_data(10)
    theta = torch.stack([cnn.init_params(0, width=W, dtype=DT)] * 2)
    bidx = torch.arange(10)
    remove = torch.tensor([4, cnn.CONTROL])
    wmask = cnn.weight_mask(W, dtype=DT)
    both = _masked_objective(theta, x, y, bidx, remove, L2, wmask, (W, 1, 10))
    keep = torch.arange(10) != 4
    ref = (cnn.objective(theta[0], x[keep], y[keep], L2, W)
           + cnn.objective(theta[1], x, y, L2, W))
    torch.testing.assert_close(both, ref)


def _trained_tiny(n=24):
    x, y = tiny_data(n)
    tr = cnn.train(x, y, steps=12, batch_size=8, lr=1e-2, decay_steps=(), decay_factors=(),
                   l2=L2, seed=0, init_seed=0, width=W, log_every=0)
    return x, y, tr


@pytest.mark.parametrize("impl", ["loop", "grouped"])
def test_batched_loo_equals_one_at_a_time(impl):
    x, y, tr = _trained_tiny()
    xt, yt = tiny_data(2, seed=7)
    remove = [3, 17, cnn.CONTROL, 0]
    kw = dict(steps=15, lr=5e-3, batch_size=8, l2=L2, seed=11, width=W, x_eval=xt, y_eval=yt)
    batched = cnn.retrain(tr.theta, tr.adam, x, y, remove, impl=impl, **kw)
    chunked = cnn.retrain(tr.theta, tr.adam, x, y, remove, chunk=3, impl=impl, **kw)
    assert batched.theta.shape == (4, cnn.num_params(W))
    assert batched.eval_losses.shape == (4, 2)
    for j, r in enumerate(remove):
        one = cnn.retrain(tr.theta, tr.adam, x, y, [r], impl="loop", **kw)
        torch.testing.assert_close(batched.theta[j], one.theta[0], rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(batched.eval_losses[j], one.eval_losses[0],
                                   rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(chunked.theta[j], one.theta[0], rtol=1e-12, atol=1e-13)
    # removal matters, and removing a point from the stream changes only its own run
    assert (batched.theta[0] - batched.theta[2]).abs().max() > 1e-8
    assert (batched.theta[1] - batched.theta[0]).abs().max() > 1e-8


@pytest.mark.parametrize("impl", ["loop", "grouped"])
def test_independent_streams_batched_equals_one_at_a_time(impl):
    x, y, tr = _trained_tiny()
    remove = [5, cnn.CONTROL, 20]
    kw = dict(steps=8, lr=5e-3, batch_size=8, l2=L2, seed=3, width=W, streams="independent")
    batched = cnn.retrain(tr.theta, tr.adam, x, y, remove, impl=impl, **kw)
    for j, r in enumerate(remove):
        one = cnn.retrain(tr.theta, tr.adam, x, y, [r], impl="loop", **kw)
        torch.testing.assert_close(batched.theta[j], one.theta[0], rtol=1e-12, atol=1e-13)
    # run 5 never sees point 5; its stream is a permutation of the other 23 points
    batches = list(cnn.batch_stream(24, 8, 6, cnn.run_seed(3, 5), exclude=5))
    assert all(5 not in b.tolist() for b in batches)
    assert len(set(torch.cat(batches[:2]).tolist())) == 16
    # shared and independent streams differ
    shared = cnn.retrain(tr.theta, tr.adam, x, y, remove, impl=impl,
                         **{**kw, "streams": "shared"})
    assert (shared.theta - batched.theta).abs().max() > 1e-8


def test_per_model_inputs_grouped_equals_loop():
    x, _ = tiny_data(12)
    thetas = torch.stack([cnn.init_params(s, width=W, dtype=DT) for s in range(3)])
    xs = x.reshape(3, 4, 1, 28, 28)
    a = cnn.stacked_logits(thetas, xs, W, impl="grouped")
    b = cnn.stacked_logits(thetas, xs, W, impl="loop")
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b[1], cnn.stacked_logits(thetas[1], xs[1], W))


def test_control_is_continued_training_and_adam_state_carries_over():
    x, y, tr = _trained_tiny()
    ctrl = cnn.retrain(tr.theta, tr.adam, x, y, [cnn.CONTROL], steps=10, lr=5e-3,
                       batch_size=8, l2=L2, seed=11, width=W)
    cont = cnn.train(x, y, steps=10, theta0=tr.theta, adam0=tr.adam, batch_size=8, lr=5e-3,
                     decay_steps=(), decay_factors=(), l2=L2, seed=11, width=W, log_every=0)
    torch.testing.assert_close(ctrl.theta[0], cont.theta, rtol=1e-13, atol=1e-14)
    assert ctrl.adam.step == tr.adam.step + 10 == 22
    # train in two calls == train in one call (stream and schedule resume)
    a = cnn.train(x, y, steps=12, batch_size=8, lr=1e-2, decay_steps=(6,), decay_factors=(0.1,),
                  seed=0, width=W, log_every=0)
    b1 = cnn.train(x, y, steps=5, batch_size=8, lr=1e-2, decay_steps=(6,), decay_factors=(0.1,),
                   seed=0, width=W, log_every=0)
    b2 = cnn.train(x, y, steps=7, theta0=b1.theta, adam0=b1.adam, start_step=5, batch_size=8,
                   lr=1e-2, decay_steps=(6,), decay_factors=(0.1,), seed=0, width=W,
                   log_every=0)
    torch.testing.assert_close(a.theta, b2.theta, rtol=1e-13, atol=1e-14)


def test_adam_update_is_tensorflow_form():
    theta = torch.tensor([[1.0, -2.0]], dtype=DT)
    st = cnn.AdamState.zeros_like(theta)
    g = torch.tensor([[0.5, -0.25]], dtype=DT)
    cnn.adam_update(theta, g, st, lr=0.1)
    # first step: m = 0.1 g, v = 0.001 g^2, lr_t = 0.1 sqrt(0.001) / 0.1
    lr_t = 0.1 * np.sqrt(1 - 0.999) / (1 - 0.9)
    ref = torch.tensor([[1.0, -2.0]], dtype=DT) - lr_t * (0.1 * g) / (
        (0.001 * g**2).sqrt() + 1e-8)
    torch.testing.assert_close(theta, ref)
    assert st.step == 1


