"""Objectives: closed forms and autograd agree with explicit derivatives."""

from __future__ import annotations

import pytest
import torch
from infcore.objective import LogisticObjective, ModuleObjective, cross_entropy, flatten_params
from problems import make_logistic
from torch import nn


def test_logistic_hvp_equals_explicit_hessian(logistic_problem):
    obj, theta, _, _ = logistic_problem
    H_auto = torch.autograd.functional.hessian(obj.loss, theta)
    assert torch.allclose(obj.hessian(theta), H_auto, atol=1e-12, rtol=0)
    v = torch.randn(obj.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert (obj.hvp(theta, v) - H_auto @ v).abs().max() < 1e-10
    V = torch.randn(obj.dim, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert (obj.hvp(theta, V) - H_auto @ V).abs().max() < 1e-10


def test_logistic_gradient_matches_autograd(logistic_problem):
    obj, theta, Xt, yt = logistic_problem
    t = theta.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(obj.loss(t), t)
    assert (obj.grad(theta) - g).abs().max() < 1e-13
    t = theta.clone().requires_grad_(True)
    (gt,) = torch.autograd.grad(obj.data_loss(t, Xt, yt), t)
    assert (obj.data_grad(theta, Xt, yt) - gt).abs().max() < 1e-13


def test_logistic_per_example_grads_match_loop(logistic_problem):
    obj, theta, _, _ = logistic_problem
    idx = torch.tensor([0, 7, 42, 299])
    G = obj.per_example_grads(theta, idx)
    for row, i in zip(G, idx.tolist(), strict=True):
        t = theta.clone().requires_grad_(True)
        loss = obj.example_losses(t, obj.X[i:i + 1], obj.y[i:i + 1]).sum() + 0.5 * obj.l2 * t.dot(t)
        (g,) = torch.autograd.grad(loss, t)
        assert (row - g).abs().max() < 1e-13
    S = torch.randn(obj.dim, 3, dtype=torch.float64)
    full = obj.per_example_grads(theta) @ S
    assert (obj.per_example_dot(theta, S, chunk=17) - full).abs().max() < 1e-12
    assert (obj.per_example_dot(theta, S[:, 0]) - full[:, 0]).abs().max() < 1e-12


def test_example_hessian_factor(logistic_problem):
    obj, theta, _, _ = logistic_problem
    idx = torch.tensor([3, 11])
    U = obj.example_hessian_factor(theta, idx)
    for j, i in enumerate(idx.tolist()):
        Hi = obj.hessian(theta, idx=torch.tensor([i]))
        Hi.diagonal().sub_(obj.l2)
        assert (U[j] @ U[j].T - Hi).abs().max() < 1e-9


def test_float32_hessian_is_close(logistic_problem):
    obj, theta, _, _ = logistic_problem
    H32 = obj.hessian(theta, dtype=torch.float32)
    assert H32.dtype == torch.float64
    assert (H32 - obj.hessian(theta)).abs().max() < 1e-5


def test_hessian_of_sparse_inputs_uses_row_groups_and_is_exact():
    """Zero columns skipped and rows grouped by support (the MNIST path) give the same matrix
    as the Hessian-vector product, column by column; float32 products stay within 1e-6."""
    from infcore.logistic import _row_groups
    from problems import make_sparse_logistic

    obj = make_sparse_logistic()
    nz = obj.X != 0
    assert not nz[:, 0].any() and not nz[:, -1].any()
    assert len(_row_groups(nz[:, 1:-1])) > 1  # the grouped path really runs
    theta = 0.3 * torch.randn(obj.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    H = obj.hessian(theta)
    ref = obj.hvp(theta, torch.eye(obj.dim, dtype=torch.float64))
    assert (H - ref).abs().max() < 1e-12 * ref.abs().max() * obj.dim
    assert (H - H.T).abs().max() < 1e-15 * ref.abs().max()
    H32 = obj.hessian(theta, dtype=torch.float32)
    assert (H32 - ref).abs().max() < 1e-6 * ref.abs().max()


def test_logistic_rejects_bad_labels():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        LogisticObjective(torch.zeros(4, 2, dtype=torch.float64), torch.tensor([0, 1, 2, 3]), 3, 0.1)


class SmallMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 5)
        self.fc2 = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


@pytest.fixture
def mlp_problem():
    torch.manual_seed(0)
    model = SmallMLP().double()
    X = torch.randn(60, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (60,))
    obj = ModuleObjective(model, cross_entropy, X, y, l2=0.01, batch_size=25)
    return obj, flatten_params(model)


def test_module_hvp_equals_explicit_hessian(mlp_problem):
    obj, theta = mlp_problem
    H = torch.autograd.functional.hessian(lambda t: obj._data_loss_fn(t, obj.X, obj.y) + obj._reg(t), theta)
    v = torch.randn(obj.dim, dtype=torch.float64)
    assert (obj.hvp(theta, v) - H @ v).abs().max() < 1e-10
    assert (obj.hessian(theta) - H).abs().max() < 1e-10


def test_module_per_example_grads_match_loop(mlp_problem):
    obj, theta = mlp_problem
    G = obj.per_example_grads(theta, torch.arange(5))
    for i in range(5):
        t = theta.clone().requires_grad_(True)
        loss = obj._data_loss_fn(t, obj.X[i:i + 1], obj.y[i:i + 1]) + obj._reg(t)
        (g,) = torch.autograd.grad(loss, t)
        assert (G[i] - g).abs().max() < 1e-12


def test_module_matches_logistic_closed_form():
    obj, _, _ = make_logistic(n=50, d=4, k=3)
    model = nn.Linear(4, 3, bias=False).double()
    mobj = ModuleObjective(model, cross_entropy, obj.X, obj.y, l2=obj.l2, batch_size=20)
    theta = torch.randn(obj.dim, dtype=torch.float64)
    v = torch.randn(obj.dim, dtype=torch.float64)
    assert (mobj.grad(theta) - obj.grad(theta)).abs().max() < 1e-12
    assert (mobj.hvp(theta, v) - obj.hvp(theta, v)).abs().max() < 1e-12
    assert (mobj.per_example_grads(theta) - obj.per_example_grads(theta)).abs().max() < 1e-12


def test_cached_hvp_fn_equals_hvp(logistic_problem):
    obj, theta, _, _ = logistic_problem
    f = obj.hvp_fn(theta)
    V = torch.randn(obj.dim, 3, dtype=torch.float64)
    assert (f(V) - obj.hvp(theta, V)).abs().max() < 1e-14
    assert (f(V[:, 0]) - obj.hvp(theta, V[:, 0])).abs().max() < 1e-14


def test_sparse_hvp_path_matches_dense():
    """The CSR path (taken for sparse, large X such as MNIST) gives the dense HVP."""
    g = torch.Generator().manual_seed(0)
    X = torch.rand(3000, 400, generator=g, dtype=torch.float64)
    X[X < 0.85] = 0  # 15% non-zero, 1.2e6 entries: the CSR path is taken
    y = torch.randint(0, 4, (3000,), generator=g)
    obj = LogisticObjective(X, y, 4, 0.01)
    theta = 0.1 * torch.randn(obj.dim, generator=g, dtype=torch.float64)
    assert obj._csr() is not None
    v = torch.randn(obj.dim, generator=g, dtype=torch.float64)
    ref = obj.hvp(theta, v)
    assert ((obj.hvp_fn(theta)(v) - ref).abs().max() / ref.abs().max()) < 1e-13
