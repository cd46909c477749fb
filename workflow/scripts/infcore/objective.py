"""Training objectives: the interface every model implements, and a generic autograd one.

The pipeline (fit, influence, LiSSA, LOO) talks to a model only through :class:`Objective`:
the regularized training objective

    F(theta) = (1/n) sum_i l(z_i; theta) + (1/2) theta^T diag(r) theta

(``r``: the L2 term's diagonal, ``l2`` on every regularized entry), its gradient and exact
Hessian-vector products, the per-point regularized loss ``l(z_i; theta) + (1/2) theta^T
diag(r) theta`` whose gradient ``g_i`` enters the influence formula (docs/design.md), the
mean data gradient at a stack of parameter vectors and point gradients and curvature (LOO),
a curvature matrix to factor (the exact Hessian where that is cheap, Gauss-Newton where
it is not), and the Gauss-Newton data matrix (a second influence estimate). Implementations: :class:`infcore.logistic.LogisticObjective` (closed forms),
:class:`infcore.cnn.certified.CNNObjective` (the CNN of Figure 2, autograd) and
:class:`ModuleObjective` (any ``nn.Module``: gradients, HVPs, influence; no LOO).
Parameters are one flat vector.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from .logistic import LogisticObjective, _chunk_rows, class_major_index


@runtime_checkable
class Objective(Protocol):
    """What fit, influence, LiSSA and LOO use. ``theta`` is a flat (dim,) vector; "a stack" is
    (m, dim). Data terms exclude the L2 term unless the name says ``loss``/``grad``."""

    n: int
    dim: int
    l2: float
    convex: bool  # True: a stationary point is the global minimum (no certificate of curvature)

    def zeros(self) -> torch.Tensor: ...
    def loss_and_grad(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
    def example_losses(self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...
    def data_loss(self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...
    def data_grad(self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...
    def reg_diagonal(self) -> torch.Tensor: ...
    def reg_grad(self, theta: torch.Tensor) -> torch.Tensor: ...
    def null_space(self) -> torch.Tensor | None: ...
    def hvp(self, theta: torch.Tensor, v: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor: ...
    def hvp_fn(self, theta: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]: ...
    def curvature(self, theta: torch.Tensor, dtype: torch.dtype | None = ...) -> tuple: ...
    def curvature_support(self) -> torch.Tensor | None: ...
    def data_hessian(self, theta: torch.Tensor) -> torch.Tensor: ...
    def gauss_newton(self, theta: torch.Tensor) -> torch.Tensor: ...
    def per_example_dot(self, theta: torch.Tensor, S: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor: ...
    def per_example_grads(self, theta: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor: ...
    def data_grads(self, thetas: torch.Tensor) -> torch.Tensor: ...
    def steering_data_grads(self, thetas: torch.Tensor, theta_hat: torch.Tensor, D_hat: torch.Tensor) -> torch.Tensor: ...
    def point_grads(self, thetas: torch.Tensor, idx: torch.Tensor) -> torch.Tensor: ...
    def point_hvp(self, thetas: torch.Tensor, idx: torch.Tensor, V: torch.Tensor) -> torch.Tensor: ...
    def point_hessian(self, theta: torch.Tensor, i: int) -> torch.Tensor: ...
    def minibatch_hvp(self, theta: torch.Tensor, batch_size: int) -> Callable: ...
    def largest_example_eigenvalue(self, theta: torch.Tensor) -> float | None: ...
    def probs(self, theta: torch.Tensor, X: torch.Tensor | None = None) -> torch.Tensor: ...
    def accuracy(self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> float: ...


def minibatch_hvp_sampler(obj, theta: torch.Tensor, batch_size: int) -> Callable:
    """``sample(V, gen)``: column r of V times the Hessian (with L2) of a fresh uniform minibatch
    of ``batch_size`` training points, by ``obj.hvp(theta, v, idx)`` (LiSSA's sampler for
    objectives without a closed form)."""
    th = theta.detach().clone()

    def sample(V: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        cols = []
        for r in range(V.shape[1]):
            idx = torch.randint(obj.n, (batch_size,), generator=gen)
            cols.append(obj.hvp(th, V[:, r], idx=idx))
        return torch.stack(cols, 1)

    return sample


# ---------------------------------------------------------------------------------------
# Generic nn.Module objective
# ---------------------------------------------------------------------------------------
def flatten_params(params: dict[str, torch.Tensor] | nn.Module) -> torch.Tensor:
    if isinstance(params, nn.Module):
        params = dict(params.named_parameters())
    return torch.cat([p.detach().reshape(-1) for p in params.values()])


class ParamSpec:
    """Names and shapes of a module's parameters, to go between dicts and flat vectors."""

    def __init__(self, model: nn.Module):
        self.names = [n for n, _ in model.named_parameters()]
        self.shapes = [p.shape for _, p in model.named_parameters()]
        self.numels = [p.numel() for _, p in model.named_parameters()]
        self.dim = sum(self.numels)

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        out, start = {}, 0
        for name, shape, size in zip(self.names, self.shapes, self.numels, strict=True):
            out[name] = theta[..., start:start + size].reshape(*theta.shape[:-1], *shape)
            start += size
        return out


def unflatten(theta: torch.Tensor, model: nn.Module) -> dict[str, torch.Tensor]:
    return ParamSpec(model).unflatten(theta)


class ModuleObjective:
    """Regularized training objective of any ``nn.Module`` by autograd.

    ``F(theta) = (1/n) sum_i loss_fn(model(x_i; theta), y_i) + (l2/2) ||m * theta||^2``
    where ``m`` is ``l2_mask`` (1 for regularized entries, e.g. weights, 0 for biases).

    Args:
        model: the network; its parameters fix the layout of theta (``flatten_params``).
        loss_fn: ``loss_fn(outputs, targets)`` returning the mean loss of a batch.
        X, y: training inputs and targets.
        l2: L2 coefficient.
        l2_mask: optional (dim,) 0/1 mask of regularized parameters.
        batch_size: rows per forward pass (HVPs and gradients are averaged over batches, as
            in the paper's CNN protocol).
    """

    def __init__(self, model: nn.Module, loss_fn: Callable, X: torch.Tensor, y: torch.Tensor,
                 l2: float, l2_mask: torch.Tensor | None = None, batch_size: int | None = None):
        self.model = model
        self.loss_fn = loss_fn
        self.X, self.y = X, y
        self.n = X.shape[0]
        self.l2 = float(l2)
        self.spec = ParamSpec(model)
        self.dim = self.spec.dim
        self.l2_mask = l2_mask
        self.batch_size = batch_size or self.n

    def _reg(self, theta: torch.Tensor) -> torch.Tensor:
        t = theta if self.l2_mask is None else theta * self.l2_mask
        return 0.5 * self.l2 * (t * t).sum()

    def _data_loss_fn(self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = functional_call(self.model, self.spec.unflatten(theta), (X,))
        return self.loss_fn(out, y)

    def _batches(self, idx: torch.Tensor | None):
        rows = torch.arange(self.n) if idx is None else torch.as_tensor(idx)
        for start in range(0, len(rows), self.batch_size):
            r = rows[start:start + self.batch_size]
            yield r, len(r) / len(rows)

    def data_loss(self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._data_loss_fn(theta, X, y)

    def data_grad(self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return grad(self._data_loss_fn)(theta.detach(), X, y)

    def loss(self, theta: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        with torch.no_grad():
            total = sum(w * self._data_loss_fn(theta, self.X[r], self.y[r]) for r, w in self._batches(idx))
            return total + self._reg(theta)

    def grad(self, theta: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        g = torch.zeros_like(theta)
        for r, w in self._batches(idx):
            g += w * grad(self._data_loss_fn)(theta.detach(), self.X[r], self.y[r])
        return g + grad(self._reg)(theta.detach())

    def hvp(self, theta: torch.Tensor, v: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """``H v`` by double backward, averaged over batches of ``batch_size`` rows."""
        if v.ndim == 2:
            return torch.stack([self.hvp(theta, v[:, j], idx) for j in range(v.shape[1])], 1)
        out = torch.zeros_like(theta)
        for r, w in self._batches(idx):
            t = theta.detach().requires_grad_(True)
            loss = self._data_loss_fn(t, self.X[r], self.y[r])
            (g,) = torch.autograd.grad(loss, t, create_graph=True)
            (hv,) = torch.autograd.grad(g, t, grad_outputs=v)
            out += w * hv.detach()
        reg = self.l2 * (v if self.l2_mask is None else v * self.l2_mask * self.l2_mask)
        return out + reg

    def hessian(self, theta: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(self.dim, dtype=theta.dtype, device=theta.device)
        return torch.stack([self.hvp(theta, eye[:, j]) for j in range(self.dim)], 1)

    def per_example_grads(self, theta: torch.Tensor, idx: torch.Tensor | None = None,
                          chunk: int | None = None) -> torch.Tensor:
        """Per-point gradients of the regularized loss by ``vmap(grad)``, shape (m, dim)."""
        rows = torch.arange(self.n) if idx is None else torch.as_tensor(idx)
        chunk = chunk or _chunk_rows(len(rows), 8 * self.dim * 4)

        def one(t, x, y):
            return self._data_loss_fn(t, x[None], y[None])

        g1 = vmap(grad(one), in_dims=(None, 0, 0))
        parts = [g1(theta.detach(), self.X[rows[s:s + chunk]], self.y[rows[s:s + chunk]])
                 for s in range(0, len(rows), chunk)]
        return torch.cat(parts) + grad(self._reg)(theta.detach())[None, :]

    def per_example_dot(self, theta: torch.Tensor, S: torch.Tensor, idx: torch.Tensor | None = None,
                        chunk: int | None = None) -> torch.Tensor:
        rows = torch.arange(self.n) if idx is None else torch.as_tensor(idx)
        chunk = chunk or _chunk_rows(len(rows), 8 * self.dim * 4)
        return torch.cat([self.per_example_grads(theta, rows[s:s + chunk]) @ S
                          for s in range(0, len(rows), chunk)])


def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(outputs, targets)


__all__ = [
    "Objective", "LogisticObjective", "ModuleObjective", "minibatch_hvp_sampler", "class_major_index", "ParamSpec", "flatten_params", "unflatten",
    "cross_entropy",
]
