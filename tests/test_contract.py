"""The influence contract checked by value on problems small enough to solve exactly.

``pred_i = (1/n) g_i^T (H + lambda I)^{-1} g_test`` (infcore.influence), with ``g_i`` the
gradient of point i's regularized loss, ``g_test`` that of the unregularized test loss and H
the Hessian of the regularized training objective. The reference here is built without
infcore: the loss is written out below, H, g_i and g_test come from torch autograd, and the
solve is ``torch.linalg.solve``. One test per bug class a reproduction must never ship (the
table of which test catches which one-line bug is in docs/testing.md, from
``python tests/inject_bugs.py``):

* a term dropped from ``g_i`` (the L2 share), the sign flipped, ``1/n`` lost or replaced by
  ``1/(n-1)``, the L2 term dropped from the Hessian or an HVP: ``test_*_prediction_*``;
* damping ignored or mis-mapped by the explicit solve, CG or LiSSA (including the paper's
  ``d -> damping = d * scale``): every solver test runs with non-zero damping;
* LOO returning before its certificate holds: ``test_loo_returns_certified_optima``;
* a float32 path where float64 is promised: ``test_float64_promised_is_float64``.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from infcore.data import load_mnist, make_random
from infcore.fit import fit
from infcore.influence import inverse_hvp_cg, inverse_hvp_lissa, predicted_loss_change
from infcore.loo import loo_retrain
from infcore.solvers import lissa, solve_explicit
from infcore.steps import influence_cg, influence_lissa, loo_shard, make_objective, train
from problems import make_logistic

N, D, K, L2 = 40, 3, 3, 0.05
DAMPING = 0.3  # lambda: of the order of H's eigenvalues, so ignoring it changes every answer
F64 = torch.float64


def quiet(msg):
    pass


# -- the reference, written without infcore ------------------------------------------------
def ref_point_loss(theta, x, y, l2):
    """Cross-entropy of one point plus the L2 term: the i-th term of the training objective."""
    logits = theta.view(K, D) @ x
    return F.cross_entropy(logits[None], y[None]) + 0.5 * l2 * theta.dot(theta)


def ref_objective(theta, X, y, l2):
    return F.cross_entropy(X @ theta.view(K, D).T, y) + 0.5 * l2 * theta.dot(theta)


def ref_grad(f, theta):
    t = theta.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(t), t)
    return g.detach()


class Reference:
    """H, G (rows g_i), g_test and the predictions by explicit solves, all from autograd."""

    def __init__(self, obj, theta, x_test, y_test):
        X, y, l2 = obj.X, obj.y, obj.l2
        self.n = X.shape[0]
        self.H = torch.autograd.functional.hessian(lambda t: ref_objective(t, X, y, l2), theta)
        self.G = torch.stack([ref_grad(lambda t, i=i: ref_point_loss(t, X[i], y[i], l2), theta)
                              for i in range(self.n)])
        self.g_test = ref_grad(lambda t: F.cross_entropy(x_test @ t.view(K, D).T, y_test), theta)
        self.grad = ref_grad(lambda t: ref_objective(t, X, y, l2), theta)

    def s(self, damping):
        return torch.linalg.solve(self.H + damping * torch.eye(self.H.shape[0], dtype=F64), self.g_test)

    def pred(self, damping):
        return self.G @ self.s(damping) / self.n


def rel_err(x, ref):
    return float((x - ref).abs().max() / ref.abs().max())


@pytest.fixture(scope="module")
def exact():
    obj, Xt, yt = make_logistic(n=N, d=D, k=K, l2=L2, seed=11, scale=1.5)
    theta = fit(obj, tol=1e-13).theta
    ref = Reference(obj, theta, Xt[:1], yt[:1])
    return obj, theta, Xt[:1], yt[:1], ref


# -- the prediction: 1/n, sign, g_i, H ----------------------------------------------------
def test_reference_is_exact_and_separates_n_from_n_minus_1(exact):
    """The fit is a stationary point of the reference objective (max|grad| <= 1e-12, L-BFGS
    plus Newton to 1e-13), and ``1/(n-1)`` in place of ``1/n`` moves every prediction by the
    relative amount ``1/(n-1) = 0.026``, 2.6e6 times the 1e-8 the tests below allow."""
    obj, theta, _, _, ref = exact
    assert float(ref.grad.abs().max()) <= 1e-12
    p = ref.pred(DAMPING)
    assert rel_err(p * N / (N - 1), p) == pytest.approx(1 / (N - 1), rel=1e-12)
    # the L2 share of g_i and the damping both matter at this size
    assert rel_err((ref.G - L2 * theta) @ ref.s(DAMPING) / N, p) > 1e-3
    assert rel_err(ref.pred(0.0), p) > 1e-2


def test_per_example_gradients_include_the_l2_share(exact):
    """g_i = grad of (cross-entropy_i + (l2/2)|theta|^2); 1e-12 is float64 round-off on O(1) entries."""
    obj, theta, _, _, ref = exact
    assert rel_err(obj.per_example_grads(theta), ref.G) <= 1e-12
    assert rel_err(obj.hessian(theta), ref.H) <= 1e-12
    assert rel_err(obj.hvp_fn(theta)(ref.g_test), ref.H @ ref.g_test) <= 1e-12
    assert rel_err(obj.hvp(theta, ref.g_test), ref.H @ ref.g_test) <= 1e-12


@pytest.mark.parametrize("damping", [0.0, DAMPING])
def test_explicit_prediction_equals_reference(exact, damping):
    """Explicit solve + predicted_loss_change equals (1/n) G (H + lambda I)^-1 g_test to 1e-8
    relative: both are Cholesky/LU solves of a matrix with condition number < 1e3, so they
    agree to ~1e-13; 1e-8 leaves room and still separates 1/n from 1/(n-1) (2.6e-2)."""
    obj, theta, x, y, ref = exact
    g = obj.data_grad(theta, x, y)
    s = solve_explicit(obj.hessian(theta), g, damping=damping)
    pred = predicted_loss_change(obj, theta, s)
    assert rel_err(pred, ref.pred(damping)) <= 1e-8
    assert torch.equal(torch.sign(pred), torch.sign(ref.pred(damping)))


@pytest.mark.parametrize("preconditioner", ["none", "curvature", "kfac"])
def test_cg_prediction_equals_reference(exact, preconditioner):
    """CG with damping to relative residual 1e-13: the solution error is at most cond(H + lambda I)
    (< 1e3) times that, 1e-10, so 1e-8 relative on the predictions."""
    obj, theta, x, y, ref = exact
    g = obj.data_grad(theta, x, y)
    res = inverse_hvp_cg(obj, theta, g, damping=DAMPING, tol=1e-13,
                         preconditioner=preconditioner).raise_if_not_converged()
    assert rel_err(res.x, ref.s(DAMPING)) <= 1e-8
    pred = predicted_loss_change(obj, theta, res.x)
    assert rel_err(pred, ref.pred(DAMPING)) <= 1e-8


def test_workflow_cg_step_prediction_equals_reference():
    """The rule's step (infcore.steps.influence_cg, damping from the config) on a random
    dataset against the autograd reference: CG to 1e-13, so 1e-8 relative as above."""
    ds = make_random(D, K, N, 5, seed=2, input_std=1.5)
    obj = make_objective(ds, {"model": "logreg", "l2": L2})
    theta, _ = train(obj, ds, {"tol": 1e-13, "max_lbfgs": 500, "max_newton": 30}, log=quiet)
    ref = Reference(obj, theta, ds.X_test[:1], ds.y_test[:1])
    cg = {"tol": 1e-13, "maxiter": 500, "damping": DAMPING, "preconditioner": "none"}
    pred, diag = influence_cg(obj, theta, ds, 0, cg, log=quiet)
    assert diag["converged"] and diag["damping"] == DAMPING
    assert rel_err(pred, ref.pred(DAMPING)) <= 1e-8


# -- LiSSA: damping, the paper's d, minibatch HVPs ------------------------------------------
class FullBatch:
    """The objective with LiSSA's minibatch Hessian replaced by the full one (deterministic)."""

    def __init__(self, obj):
        self.obj = obj
        self.n, self.dim = obj.n, obj.dim

    def minibatch_hvp(self, theta, batch_size):
        return lambda V, gen: self.obj.hvp(theta, V)

    def hvp(self, theta, v, idx=None):
        return self.obj.hvp(theta, v, idx)


def lissa_depth(ref, damping, scale, eps=1e-12):
    """Steps after which the deterministic recursion's error (1 - mu_min/scale)^depth < eps."""
    mu_min = float(torch.linalg.eigvalsh(ref.H)[0]) + damping
    return math.ceil(math.log(eps) / math.log(1 - mu_min / scale))


@pytest.mark.parametrize("damping", [0.0, DAMPING])
def test_lissa_full_batch_equals_reference(exact, damping):
    """LiSSA with the full Hessian in place of minibatches is the Neumann series of
    (H + lambda I)/scale, whose error after ``depth`` steps is (1 - mu_min/scale)^depth
    relative (1e-12 by the choice of depth), so 1e-8 relative on s and the predictions."""
    obj, theta, x, y, ref = exact
    scale = 1.1 * float(torch.linalg.eigvalsh(ref.H)[-1] + damping)
    g = obj.data_grad(theta, x, y)
    res = inverse_hvp_lissa(FullBatch(obj), theta, g, depth=lissa_depth(ref, damping, scale),
                            scale=scale, repeats=1, damping=damping)
    assert res.damping == damping
    assert rel_err(res.x, ref.s(damping)) <= 1e-8
    assert rel_err(predicted_loss_change(obj, theta, res.x), ref.pred(damping)) <= 1e-8


def test_lissa_damping_is_the_papers_d_times_scale(exact):
    """The paper's recursion ``x <- g + (1 - d) x - H x / scale`` (Koh & Liang's code) is
    infcore's with ``damping = d * scale``: the same arithmetic up to rounding, so 1e-12
    relative; and both solve (H + d * scale I) x = g (1e-8, as above)."""
    obj, theta, x, y, ref = exact
    d, scale = 0.02, 1.1 * float(torch.linalg.eigvalsh(ref.H)[-1]) + 0.5
    g = obj.data_grad(theta, x, y)
    depth = lissa_depth(ref, d * scale, scale)
    cur = g.clone()
    for _ in range(depth):
        cur = g + (1 - d) * cur - (ref.H @ cur) / scale
    paper = cur / scale
    ours = lissa(lambda V, gen: ref.H @ V, g, depth=depth, scale=scale, damping=d * scale).x
    assert rel_err(ours, paper) <= 1e-12
    assert rel_err(ours, ref.s(d * scale)) <= 1e-8


@pytest.mark.parametrize("damping", [0.0, DAMPING])
def test_lissa_minibatch_is_unbiased_within_its_standard_error(exact, damping):
    """With independent minibatches the expected LiSSA iterate is the deterministic recursion
    (truncation 1e-12 by the depth), so the mean over R repeats misses (H + lambda I)^-1 g by
    its standard error; 5 standard errors (Chebyshev: a 4% chance for a correct code, fixed
    by the seed) bound it, while the L2 term or the damping dropped moves s by > 10%."""
    obj, theta, x, y, ref = exact
    scale = 1.5 * float(obj.largest_example_eigenvalue(theta)) + damping
    g = obj.data_grad(theta, x, y)
    R = 200
    res = inverse_hvp_lissa(obj, theta, g, depth=lissa_depth(ref, damping, scale), scale=scale,
                            repeats=R, batch_size=5, damping=damping, seed=3)
    stderr = float(res.per_repeat.var(dim=1).sum().sqrt()) / math.sqrt(R)
    err = float((res.x - ref.s(damping)).norm())
    assert err <= 5 * stderr, (err, stderr)
    assert 5 * stderr <= 0.1 * float(ref.s(damping).norm())  # the test can see a 10% bias


def test_workflow_lissa_step_passes_damping(exact):
    """The rule's step (infcore.steps.influence_lissa, damping from the config) computes
    exactly ``(1/n) g_i . s`` with s the library's LiSSA at the same settings and seed (same
    arithmetic: 1e-15 relative), whose damping and bias the tests above check."""
    obj, theta, x, y, ref = exact

    class DS:
        X_test, y_test = x, y

    scale = 1.5 * float(obj.largest_example_eigenvalue(theta)) + DAMPING
    cfg = {"depth": lissa_depth(ref, DAMPING, scale), "scale": scale, "repeats": 20, "batch_size": 5,
           "damping": DAMPING, "seed": 3}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred, diag = influence_lissa(obj, theta, DS, 0, torch.arange(N), cfg, log=quiet)
    g = obj.data_grad(theta, x, y)
    s = inverse_hvp_lissa(obj, theta, g, depth=cfg["depth"], scale=scale, repeats=20, batch_size=5,
                          damping=DAMPING, seed=3).x
    assert diag["damping"] == DAMPING
    assert rel_err(pred, predicted_loss_change(obj, theta, s)) <= 1e-15
    # and it is the damped solution (20 repeats: within 5 standard errors, here < 10%)
    assert rel_err(pred, ref.pred(DAMPING)) <= 0.1
    assert rel_err(ref.pred(0.0), ref.pred(DAMPING)) > 0.3


# -- LOO: the certificate holds at what is returned ------------------------------------------
def test_loo_returns_certified_optima(exact):
    """Every returned theta_-i has max|grad F_-i| <= tol = 1e-10, F_-i the objective without
    point i computed here by autograd, and the reported certificate is that gradient (to
    1e-13: float64 round-off of O(1) sums)."""
    obj, theta, _, _, _ = exact
    X, y = obj.X, obj.y
    tol = 1e-10
    loo = loo_retrain(obj, theta, torch.arange(N), tol=tol)
    assert loo.converged.all()
    for i in range(N):
        keep = torch.arange(N) != i
        g = ref_grad(lambda t, k=keep: ref_objective(t, X[k], y[k], L2), loo.thetas[i])
        gm = float(g.abs().max())
        assert gm <= tol, (i, gm)
        assert abs(gm - float(loo.grad_maxnorm[i])) <= 1e-13
    # removing a point moves the optimum: the certificate is not met at theta_hat
    assert float(ref_grad(lambda t: ref_objective(t, X[1:], y[1:], L2), theta).abs().max()) > 1e3 * tol


# -- float64 where float64 is promised -------------------------------------------------------
def test_float64_promised_is_float64(tmp_path):
    """Datasets (MNIST from the files and random), the fit, the CG and LiSSA predictions and
    the LOO certificates are float64 (docs/design.md); a float32 path would stall CG at
    ~1e-6 and make the 1e-10 certificates meaningless."""
    from fake_mnist import write_fake_mnist

    write_fake_mnist(tmp_path, n_train=60, n_test=10, seed=0, image_size=4)
    m = load_mnist(tmp_path, validation_size=10)
    assert m.X_train.dtype == F64 and m.X_test.dtype == F64
    ds = make_random(D, K, N, 5, seed=2, input_std=1.5)
    assert ds.X_train.dtype == F64 and ds.X_test.dtype == F64
    obj = make_objective(ds, {"model": "logreg", "l2": L2})
    theta, rec = train(obj, ds, {"tol": 1e-10, "max_lbfgs": 500, "max_newton": 30}, log=quiet)
    assert theta.dtype == F64 and rec["grad_maxnorm"] <= 1e-10
    cg = {"tol": 1e-10, "maxiter": 500, "damping": 0.0, "preconditioner": "none"}
    pred, _ = influence_cg(obj, theta, ds, 0, cg, log=quiet)
    assert pred.dtype == F64
    lcfg = {"depth": 50, "scale": 50.0, "repeats": 2, "batch_size": 5, "damping": 0.0, "seed": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lpred, _ = influence_lissa(obj, theta, ds, 0, torch.arange(3), lcfg, log=quiet)
    assert lpred.dtype == F64
    shard = loo_shard(obj, theta, ds, torch.arange(3), [0], {"tol": 1e-10, "max_steps": 30}, log=quiet)
    assert shard["test_losses"].dtype == F64 and shard["grad_maxnorm"].dtype == F64
    assert float(shard["grad_maxnorm"].max()) <= 1e-10
