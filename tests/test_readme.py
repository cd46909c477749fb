"""The README's infcore snippet, run as written (issue 15: it failed on float32 models)."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import nn
from workflow_utils import REPO


def readme_snippet() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Using infcore on your own model", 1)[1]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m, "no python block in the README's infcore section"
    return m.group(1)


def trained_mlp(n=200, d=8, k=3, seed=0):
    """A small tanh MLP fit in float64 near its optimum (L2 0.01), and its data."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    W = torch.randn(d, k, generator=g, dtype=torch.float64)
    y = (X @ W + 0.5 * torch.randn(n, k, generator=g, dtype=torch.float64)).argmax(1)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, k)).double()
    opt = torch.optim.LBFGS(model.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(X), y) + 0.005 * sum((p ** 2).sum() for p in model.parameters())
        loss.backward()
        return loss

    opt.step(closure)
    return model, X, y


@pytest.fixture(scope="module")
def problem():
    from infcore.objective import ModuleObjective, cross_entropy, flatten_params

    model, X, y = trained_mlp()
    x_test, y_test = X[:1] + 0.3, y[:1]
    obj = ModuleObjective(model, cross_entropy, X, y, l2=0.01)
    theta = flatten_params(model).detach()
    H = obj.hessian(theta) + 0.01 * torch.eye(obj.dim, dtype=torch.float64)
    assert float(torch.linalg.eigvalsh(H)[0]) > 0  # damped Hessian positive definite here
    exact = obj.per_example_grads(theta) @ torch.linalg.solve(H, obj.data_grad(theta, x_test, y_test)) / obj.n
    return model, X, y, x_test, y_test, exact


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_readme_snippet_runs_as_written(problem, dtype):
    model, X, y, x_test, y_test, exact = problem
    ns = {"model": copy.deepcopy(model).to(dtype), "X_train": X.to(dtype), "y_train": y,
          "x_test": x_test.to(dtype), "y_test": y_test}
    exec(compile(readme_snippet(), "README.md", "exec"), ns)  # raises if CG did not converge
    s, pred = ns["s"], ns["pred"]
    assert s.converged and pred.shape == (X.shape[0],) and pred.dtype == dtype
    err = float((pred.double() - exact).abs().max() / exact.abs().max())
    if dtype == torch.float64:
        assert s.residual <= 1e-10 and err < 1e-9, (s.residual, err)  # measured 6.6e-11
    else:
        assert s.residual <= 1e-5 and err < 1e-4, (s.residual, err)  # measured 1.0e-5


def test_cg_tolerance_follows_the_dtype(problem):
    from infcore.influence import CG_TOL, inverse_hvp_cg
    from infcore.objective import ModuleObjective, cross_entropy, flatten_params

    assert CG_TOL == {torch.float64: 1e-10, torch.float32: 1e-5}
    model, X, y, x_test, y_test, _ = problem
    m16 = copy.deepcopy(model).to(torch.bfloat16)
    obj = ModuleObjective(m16, cross_entropy, X.to(torch.bfloat16), y, l2=0.01)
    theta = flatten_params(m16)
    with pytest.raises(ValueError, match="no default CG tolerance for torch.bfloat16"):
        inverse_hvp_cg(obj, theta, obj.data_grad(theta, x_test.to(torch.bfloat16), y_test))
