"""The objective interface (infcore.objective.Objective), checked the same way on both
objectives the pipeline runs: logistic regression (closed forms) and the CNN (autograd).

Tolerances: every check compares two float64 evaluations of the same quantity by different
routes (closed form or autograd against torch.func on the explicit loss), so they agree to
round-off, ~1e-15 relative; 1e-10 leaves room for summation order over a few hundred terms.
"""

import pytest
import torch
import torch.nn.functional as F
from infcore.cnn.certified import CNNObjective
from infcore.cnn.model import init_params
from infcore.logistic import LogisticObjective
from infcore.objective import Objective

TOL = 1e-10


def _logistic():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 5, generator=g, dtype=torch.float64)
    y = torch.randint(3, (40,), generator=g)
    obj = LogisticObjective(X, y, 3, 0.05)
    theta = 0.3 * torch.randn(obj.dim, generator=g, dtype=torch.float64)

    def full_loss(t, X=X, y=y):
        return F.cross_entropy(X @ t.view(3, 5).T, y) + 0.5 * 0.05 * (t * t).sum()

    return obj, theta, full_loss


def _cnn():
    g = torch.Generator().manual_seed(1)
    X = torch.rand(12, 784, generator=g, dtype=torch.float64)
    y = torch.randint(10, (12,), generator=g)
    obj = CNNObjective(X, y, 0.01, width=1, chunk=5)  # chunked passes: 5 + 5 + 2 rows
    theta = init_params(3, 1, dtype=torch.float64) + 0.05 * torch.randn(obj.dim, generator=g,
                                                                       dtype=torch.float64)

    def full_loss(t):
        return F.cross_entropy(obj.logits(t, X), y) + 0.5 * (obj.reg * t * t).sum()

    return obj, theta, full_loss


OBJECTIVES = {"logistic": _logistic, "cnn": _cnn}


@pytest.fixture(params=list(OBJECTIVES), scope="module")
def problem(request):
    return OBJECTIVES[request.param]()


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def test_implements_the_protocol(problem):
    obj, _, _ = problem
    assert isinstance(obj, Objective)


def test_loss_and_gradient_equal_autograd(problem):
    obj, theta, full_loss = problem
    f, g = obj.loss_and_grad(theta)
    assert abs(float(f) - float(full_loss(theta))) <= TOL * abs(float(f))
    assert rel(g, torch.func.grad(full_loss)(theta)) <= TOL


def test_hvp_equals_torch_func_hessian(problem):
    obj, theta, full_loss = problem
    H = torch.func.hessian(full_loss)(theta)
    V = torch.randn(obj.dim, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert rel(obj.hvp(theta, V[:, 0]), H @ V[:, 0]) <= TOL
    assert rel(obj.hvp(theta, V), H @ V) <= TOL
    assert rel(obj.hvp_fn(theta)(V[:, 1]), H @ V[:, 1]) <= TOL


def test_data_hessian_and_point_hessian(problem):
    obj, theta, full_loss = problem
    H = torch.func.hessian(full_loss)(theta)
    assert rel(obj.data_hessian(theta) + torch.diag(obj.reg_diagonal()), H) <= TOL
    i = 3

    def point_loss(t):
        return full_loss_point(obj, t, i)

    assert rel(obj.point_hessian(theta, i), torch.func.hessian(point_loss)(theta)) <= TOL


def full_loss_point(obj, t, i):
    """Point i's unregularized loss by the objective's own example_losses (a third route)."""
    if isinstance(obj, CNNObjective):
        return F.cross_entropy(obj.logits(t, obj.X[i:i + 1]), obj.y[i:i + 1])
    return F.cross_entropy(obj.X[i:i + 1] @ obj.weight(t).T, obj.y[i:i + 1])


def test_data_grads_for_a_stack_equal_a_loop(problem):
    obj, theta, _ = problem
    g = torch.Generator().manual_seed(4)
    T = theta + 0.1 * torch.randn(3, obj.dim, generator=g, dtype=torch.float64)
    D = obj.data_grads(T)
    for j in range(3):
        assert rel(D[j], obj.data_grad(T[j], obj.X, obj.y)) <= TOL
    # the float32 steering pass agrees to float32 accuracy, not better
    S = obj.steering_data_grads(T, theta, obj.data_grad(theta, obj.X, obj.y))
    assert 0 < rel(S, D) <= 1e-4


def test_point_gradients_and_curvature_at_given_indices(problem):
    obj, theta, _ = problem
    g = torch.Generator().manual_seed(5)
    idx = torch.tensor([0, 7, 7])
    T = theta + 0.1 * torch.randn(3, obj.dim, generator=g, dtype=torch.float64)
    V = torch.randn(3, obj.dim, generator=g, dtype=torch.float64)
    G = obj.point_grads(T, idx)
    HV = obj.point_hvp(T, idx, V)
    for j, i in enumerate(idx.tolist()):
        assert rel(G[j], torch.func.grad(lambda t, i=i: full_loss_point(obj, t, i))(T[j])) <= TOL
        assert rel(HV[j], obj.point_hessian(T[j], i) @ V[j]) <= TOL


def test_per_example_dots_equal_explicit_gradients(problem):
    obj, theta, _ = problem
    G = obj.per_example_grads(theta)  # regularized: data gradient + reg * theta
    for i in (0, 5):
        gi = torch.func.grad(lambda t, i=i: full_loss_point(obj, t, i))(theta) + obj.reg_grad(theta)
        assert rel(G[i], gi) <= TOL
    S = torch.randn(obj.dim, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert rel(obj.per_example_dot(theta, S), G @ S) <= TOL
    assert rel(obj.per_example_dot(theta, S[:, 0], torch.tensor([2, 4])), G[[2, 4]] @ S[:, 0]) <= TOL


def test_null_space_is_exact(problem):
    """H u = 0 and g_i . u = 0 along the null directions (the CNN: output-bias sum)."""
    obj, theta, _ = problem
    U = obj.null_space()
    if U is None:
        pytest.skip("logistic regression has no null direction (l2 covers every weight)")
    assert U.shape == (obj.dim, 1) and abs(float(U.norm()) - 1) < 1e-15
    assert float(obj.hvp(theta, U[:, 0]).abs().max()) <= 1e-13
    assert float((obj.per_example_grads(theta) @ U).abs().max()) <= 1e-13


def test_gauss_newton_equals_its_definition():
    """sum_i J_i^T (diag p_i - p_i p_i^T) J_i / n with explicit per-example Jacobians."""
    obj, theta, _ = _cnn()
    P = obj.probs(theta)
    GN = torch.zeros(obj.dim, obj.dim, dtype=torch.float64)
    for i in range(obj.n):
        J = torch.func.jacrev(lambda t, i=i: obj.logits(t, obj.X[i:i + 1])[0])(theta)
        GN += J.T @ (torch.diag(P[i]) - torch.outer(P[i], P[i])) @ J
    GN /= obj.n
    assert rel(obj.gauss_newton(theta, prune=0.0), GN) <= TOL
