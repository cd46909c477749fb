"""The CNN at a certified local minimum: fit certificate, certified LOO, influence in value.

A tiny instance of the paper's architecture (width 1, 180 parameters) on 40 random images,
L2 0.01, fitted in float64 to max|grad| <= 1e-11 (one module-scoped fit, ~1-4 minutes on 2
cores: slow tier).
"""

import pytest
import torch
import torch.nn.functional as F
from infcore.certify import certified_fit, hessian_spectrum
from infcore.cnn.certified import CNNObjective
from infcore.cnn.model import init_params
from infcore.influence import inverse_hvp_cg, predicted_loss_change
from infcore.loo import loo_retrain

pytestmark = pytest.mark.slow
N, W, L2, TOL = 40, 1, 0.01, 1e-11


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convolutions: one thread is far faster than two on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fitted(one_thread):
    g = torch.Generator().manual_seed(0)
    X = torch.rand(N, 784, generator=g, dtype=torch.float64)
    y = torch.randint(10, (N,), generator=g)
    Xt = torch.rand(1, 784, generator=g, dtype=torch.float64)
    yt = torch.tensor([3])
    obj = CNNObjective(X, y, L2, width=W)
    res = certified_fit(obj, init_params(0, W, dtype=torch.float64), tol=TOL, lbfgs_tol=1e-8,
                        max_lbfgs=5000)
    return obj, res, Xt, yt


def test_fit_is_a_certified_local_minimum(fitted):
    obj, res, _, _ = fitted
    assert res.converged and res.grad_maxnorm <= TOL
    assert float(obj.grad(res.theta).abs().max()) <= TOL  # an independent float64 pass
    def loss(t):  # differentiable (obj.loss evaluates without autograd)
        return F.cross_entropy(obj.logits(t, obj.X), obj.y) + 0.5 * (obj.reg * t * t).sum()

    H = torch.func.hessian(loss)(res.theta)  # the explicit Hessian
    spec = hessian_spectrum(H, obj.null_space())
    assert spec.lam_min > 0 and res.spectrum.positive_definite
    # the certificate's eigenvalues are those of the explicit Hessian (same matrix, ~1e-12)
    assert abs(res.spectrum.lam_min - spec.lam_min) <= 1e-9 * spec.lam_max
    assert spec.null_residual <= 1e-12  # H u = 0 along the output-bias sum


def test_loo_optima_are_certified_and_equal_a_fit_from_scratch(fitted):
    obj, res, _, _ = fitted
    idx = torch.tensor([0, 5, 17])
    loo = loo_retrain(obj, res.theta, idx, tol=TOL, hessian_dtype=torch.float64, max_steps=300)
    assert bool(loo.converged.all()) and float(loo.grad_maxnorm.max()) <= TOL
    for j, i in enumerate(idx.tolist()):
        sub = obj.without(i)
        assert float(sub.grad(loo.thetas[j]).abs().max()) <= TOL  # its own objective's gradient
        ref = certified_fit(sub, res.theta, tol=1e-12, max_lbfgs=0)  # from theta_hat, Newton only
        # two certified optima of the same strictly convex-near-the-optimum objective:
        # |dtheta| <= |grad| / lambda_min ~ 1e-11 / 2e-3
        assert float((ref.theta - loo.thetas[j]).abs().max()) <= 1e-7


def test_influence_predicts_loo_in_value_and_sign(fitted):
    """pred_i = (1/n) g_test^T H^-1 g_i against certified LOO (36 of 40 certified by the non-convex
    L-BFGS path within 300 iterations; 1 left the basin, 3 hit the budget: at least 30). One point of
    40 for a 180-parameter network is not a small perturbation: measured here, Pearson 0.77,
    slope 0.28 (the first-order prediction is smaller than the change), mean offset
    mean(pred - actual) / rms(actual) = 0.009, sign agreement 24 of the 26 largest changes. The
    bounds keep that measured agreement and fail on a flipped sign (Pearson -0.77), a lost 1/n
    (slope x40) or a lost g_test (zeros); the 1/n-scale checks are the linear tests'."""
    obj, res, Xt, yt = fitted
    th = res.theta
    s = inverse_hvp_cg(obj, th, obj.data_grad(th, Xt, yt), tol=1e-12, preconditioner="curvature")
    assert s.converged and s.iterations <= 3  # exact-Hessian preconditioner
    pred = predicted_loss_change(obj, th, s.x)
    loo = loo_retrain(obj, th, torch.arange(N), tol=TOL, hessian_dtype=torch.float64, max_steps=300)
    ok = loo.converged  # points that left the basin are reported uncertified, not compared
    assert int(ok.sum()) >= 30 and float(loo.grad_maxnorm[ok].max()) <= TOL
    actual = obj.example_losses(loo.thetas, Xt, yt)[:, 0] - obj.example_losses(th, Xt, yt)[0]
    pred, actual = pred[ok], actual[ok]
    big = actual.abs() >= 0.1 * actual.abs().max()
    assert float((pred.sign() == actual.sign())[big].double().mean()) >= 0.9
    assert abs(float((pred - actual).mean() / actual.pow(2).mean().sqrt())) <= 0.1
    assert float(torch.corrcoef(torch.stack([pred, actual]))[0, 1]) >= 0.7
    slope = float((pred * actual).sum() / (actual * actual).sum())
    assert 0.15 <= slope <= 0.6
