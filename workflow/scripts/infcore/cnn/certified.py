"""The CNN's training objective behind the pipeline's objective interface.

``F(theta) = (1/n) sum_i CE_i(theta) + (l2/2) ||w||^2`` of :class:`.model.AllCNNC` (L2 on the
weights, not the biases), everything by autograd on the network of :func:`.model.
stacked_logits` (the one CNN forward of the package). It implements
:class:`infcore.objective.Objective`, so the linear models' fit, influence, LiSSA and LOO code
runs on it unchanged. What differs from logistic regression:

* the objective is not convex (``convex = False``): a stationary point is certified a local
  minimum by the smallest eigenvalue of H (:mod:`infcore.certify`);
* H has an exact null direction: adding one constant to all output biases leaves the softmax
  and the L2 term unchanged (:meth:`CNNObjective.null_space`); every gradient is orthogonal
  to it, so influence and LOO are well defined on its complement;
* the curvature matrix to factor (:meth:`CNNObjective.curvature`) is the exact Hessian, by
  Hessian-vector products of blocks of basis vectors (``curvature="exact"``; the default,
  affordable for small networks), or Gauss-Newton ``(1/n) sum_i J_i^T A_i J_i`` from
  per-example logit Jacobians (``curvature="gauss_newton"``).

Inputs are kept as the dataset stores them, ``(n, C*H*W)`` float64 rows, and viewed as images.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import grad, jacrev, jvp, vmap

from ..objective import minibatch_hvp_sampler
from .model import num_params, stacked_logits, weight_mask


class CNNObjective:
    """All-CNN-C's regularized training objective on flattened images.

    Args:
        X: (n, C*side*side) inputs (float64 for the certified experiment).
        y: (n,) labels.
        l2: L2 coefficient on the weights.
        width: hidden channels of the network.
        n_classes: classes (10).
        side: image side (28).
        curvature: ``"exact"`` or ``"gauss_newton"`` (see the module docstring).
        chunk: points per forward pass (memory).
    """

    convex = False

    def __init__(self, X: Tensor, y: Tensor, l2: float, width: int = 8, n_classes: int = 10,
                 side: int = 28, curvature: str = "exact", chunk: int = 1100):
        if X.ndim != 2 or X.shape[1] % (side * side):
            raise ValueError(f"X must be (n, C*{side}*{side}) rows, got shape {tuple(X.shape)}")
        if y.shape != (X.shape[0],):
            raise ValueError(f"y must have shape ({X.shape[0]},), got {tuple(y.shape)}")
        if curvature not in ("exact", "gauss_newton"):
            raise ValueError(f"curvature must be 'exact' or 'gauss_newton', got {curvature!r}")
        self.X, self.y = X, y.long()
        self.n = int(X.shape[0])
        self.side, self.in_channels = int(side), int(X.shape[1] // (side * side))
        self.width, self.n_classes = int(width), int(n_classes)
        self.dims = (self.width, self.in_channels, self.n_classes)
        self.dim = num_params(*self.dims)
        self.l2 = float(l2)
        self.reg = self.l2 * weight_mask(*self.dims, dtype=X.dtype, device=X.device)
        self.curvature_kind = curvature
        self.chunk = int(chunk)
        self._x32 = None

    def without(self, i: int) -> CNNObjective:
        """The same objective on the training data without point i (its LOO objective)."""
        keep = torch.ones(self.n, dtype=torch.bool, device=self.X.device)
        keep[int(i)] = False
        return CNNObjective(self.X[keep], self.y[keep], self.l2, self.width, self.n_classes, self.side,
                            self.curvature_kind, self.chunk)

    # -- helpers -------------------------------------------------------------------------------
    def images(self, X: Tensor) -> Tensor:
        return X.reshape(X.shape[0], self.in_channels, self.side, self.side)

    def logits(self, theta: Tensor, X: Tensor) -> Tensor:
        """(B, k) logits of rows X, or (m, B, k) for a stack of parameter vectors."""
        return stacked_logits(theta, self.images(X), *self.dims)

    def zeros(self) -> Tensor:
        return torch.zeros(self.dim, dtype=self.X.dtype, device=self.X.device)

    def _rows(self, n: int):
        for s in range(0, n, self.chunk):
            yield slice(s, min(n, s + self.chunk))

    def null_space(self) -> Tensor:
        """(dim, 1): the output-bias sum direction (``H u = 0`` exactly)."""
        u = torch.zeros(self.dim, 1, dtype=self.X.dtype, device=self.X.device)
        u[-self.n_classes:, 0] = 1.0 / math.sqrt(self.n_classes)
        return u

    def reg_diagonal(self) -> Tensor:
        return self.reg

    def reg_grad(self, theta: Tensor) -> Tensor:
        return self.reg * theta

    # -- zeroth and first order ------------------------------------------------------------------
    def example_losses(self, theta: Tensor, X: Tensor, y: Tensor) -> Tensor:
        """Unregularized cross-entropy per point: (N,) for theta (dim,), (m, N) for a stack."""
        with torch.no_grad():
            parts = []
            for r in self._rows(X.shape[0]):
                z = self.logits(theta, X[r])
                if theta.ndim == 1:
                    parts.append(F.cross_entropy(z, y[r], reduction="none"))
                else:
                    parts.append(torch.stack([F.cross_entropy(zj, y[r], reduction="none") for zj in z]))
            return torch.cat(parts, -1)

    def data_loss(self, theta: Tensor, X: Tensor, y: Tensor) -> Tensor:
        return self.example_losses(theta, X, y).mean(-1)

    def _loss_grad(self, theta: Tensor, X: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        loss = torch.zeros((), dtype=theta.dtype, device=theta.device)
        g = torch.zeros_like(theta)
        for r in self._rows(X.shape[0]):
            p = theta.detach().clone().requires_grad_(True)
            ce = F.cross_entropy(self.logits(p, X[r]), y[r], reduction="sum")
            (gr,) = torch.autograd.grad(ce, p)
            loss += ce.detach()
            g += gr
        return loss / X.shape[0], g / X.shape[0]

    def data_grad(self, theta: Tensor, X: Tensor, y: Tensor) -> Tensor:
        return self._loss_grad(theta, X, y)[1]

    def loss_and_grad(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        loss, g = self._loss_grad(theta, self.X, self.y)
        return loss + 0.5 * (self.reg * theta * theta).sum(), g + self.reg * theta

    def loss(self, theta: Tensor) -> Tensor:
        return self.data_loss(theta, self.X, self.y) + 0.5 * (self.reg * theta * theta).sum(-1)

    def grad(self, theta: Tensor) -> Tensor:
        return self.loss_and_grad(theta)[1]

    def _point_loss(self, theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(self.logits(theta, x[None]), y[None])

    def per_example_grads(self, theta: Tensor, idx: Tensor | None = None) -> Tensor:
        """(m, dim) gradients ``g_i`` of the points' regularized losses."""
        idx = torch.arange(self.n) if idx is None else torch.as_tensor(idx)
        g = vmap(grad(self._point_loss), in_dims=(None, 0, 0))(theta, self.X[idx], self.y[idx])
        return g + self.reg * theta

    def per_example_dot(self, theta: Tensor, S: Tensor, idx: Tensor | None = None) -> Tensor:
        """``g_i . s`` for every point and column s of S (dim,) or (dim, m): a forward-mode
        derivative (JVP) of the per-point losses along s, plus the L2 share ``(r * theta) . s``."""
        single = S.ndim == 1
        S2 = S[:, None] if single else S
        rows = torch.arange(self.n) if idx is None else torch.as_tensor(idx)
        cols = []
        for j in range(S2.shape[1]):
            s = S2[:, j].contiguous()
            parts = []
            for r in self._rows(rows.numel()):
                xb, yb = self.X[rows[r]], self.y[rows[r]]

                def f(p, xb=xb, yb=yb):
                    return F.cross_entropy(self.logits(p, xb), yb, reduction="none")

                parts.append(jvp(f, (theta.detach(),), (s,))[1])
            cols.append(torch.cat(parts) + (self.reg * theta) @ s)
        out = torch.stack(cols, 1)
        return out[:, 0] if single else out

    # -- stacks of parameter vectors (LOO passes) --------------------------------------------------
    def data_grads(self, thetas: Tensor) -> Tensor:
        """Mean data gradient over all n points at each row of thetas: (m, dim), float64."""
        return torch.stack([self._loss_grad(t, self.X, self.y)[1] for t in thetas])

    def steering_data_grads(self, thetas: Tensor, theta_hat: Tensor, D_hat: Tensor) -> Tensor:
        """``data_grads`` by a float32 pass (error ~1e-7 relative, for passes that only steer a
        step; the certificate is always a float64 pass)."""
        if self._x32 is None:
            self._x32 = self.X.to(torch.float32)
        return torch.stack([self._loss_grad(t.to(torch.float32), self._x32, self.y)[1]
                            for t in thetas]).to(thetas.dtype)

    def point_grads(self, thetas: Tensor, idx: Tensor) -> Tensor:
        """Row j: data gradient (no L2) of point ``idx[j]`` at ``thetas[j]``."""
        return vmap(grad(self._point_loss))(thetas, self.X[idx], self.y[idx])

    def point_hvp(self, thetas: Tensor, idx: Tensor, V: Tensor) -> Tensor:
        """Row j: point ``idx[j]``'s data Hessian at ``thetas[j]`` times ``V[j]``."""
        def one(t, x, y, v):
            return jvp(lambda s: grad(self._point_loss)(s, x, y), (t,), (v,))[1]

        return vmap(one)(thetas, self.X[idx], self.y[idx], V)

    def point_hessian(self, theta: Tensor, i: int) -> Tensor:
        """Point i's data Hessian at theta, (dim, dim)."""
        return torch.func.hessian(self._point_loss)(theta, self.X[i], self.y[i])

    # -- second order ---------------------------------------------------------------------------
    def hvp(self, theta: Tensor, v: Tensor, idx: Tensor | None = None) -> Tensor:
        """Exact ``H v`` (L2 term included) by double backward; v (dim,) or (dim, r); ``idx``:
        the Hessian of those rows' mean loss (a minibatch)."""
        if v.ndim == 2:
            return torch.stack([self.hvp(theta, v[:, j], idx) for j in range(v.shape[1])], 1)
        rows = torch.arange(self.n) if idx is None else torch.as_tensor(idx)
        out = torch.zeros_like(theta)
        for r in self._rows(rows.numel()):
            xb, yb = self.X[rows[r]], self.y[rows[r]]
            p = theta.detach().clone().requires_grad_(True)
            ce = F.cross_entropy(self.logits(p, xb), yb, reduction="sum")
            (g,) = torch.autograd.grad(ce, p, create_graph=True)
            (hv,) = torch.autograd.grad(g @ v, p)
            out += hv
        return out / rows.numel() + self.reg * v

    def hvp_fn(self, theta: Tensor) -> Callable[[Tensor], Tensor]:
        th = theta.detach().clone()
        return lambda v: self.hvp(th, v)

    def data_hessian(self, theta: Tensor, block: int = 64) -> Tensor:
        """The exact data Hessian (no L2), (dim, dim): forward-over-reverse products with
        blocks of ``block`` basis vectors at a time, chunk by chunk of points, symmetrized."""
        th = theta.detach()
        H = torch.zeros(self.dim, self.dim, dtype=th.dtype, device=th.device)
        eye = torch.eye(self.dim, dtype=th.dtype, device=th.device)
        for r in self._rows(self.n):
            xb, yb = self.images(self.X[r]), self.y[r]

            def g(t, xb=xb, yb=yb):
                return grad(lambda s: F.cross_entropy(stacked_logits(s, xb, *self.dims), yb,
                                                      reduction="sum"))(t)

            def col(v, g=g):
                return jvp(g, (th,), (v,))[1]

            for b in range(0, self.dim, block):
                H[b:b + block] += vmap(col)(eye[b:b + block])
        H /= self.n
        return 0.5 * (H + H.T)

    def hessian(self, theta: Tensor) -> Tensor:
        """The exact Hessian with the L2 term, (dim, dim)."""
        H = self.data_hessian(theta)
        H.diagonal().add_(self.reg)
        return H

    def logit_jacobians(self, theta: Tensor, idx: Tensor) -> Tensor:
        """(m, k, dim) per-example Jacobians of the logits."""
        def one(t, x):
            return self.logits(t, x[None])[0]

        return vmap(jacrev(one), in_dims=(None, 0))(theta.detach(), self.X[idx])

    def gauss_newton(self, theta: Tensor, dtype: torch.dtype | None = None, chunk: int = 250,
                     prune: float = 1e-12) -> Tensor:
        """``(1/n) sum_i J_i^T A_i J_i``, ``A_i = diag(p_i) - p_i p_i^T``, as ``B^T B`` with
        rows ``sqrt(p_ir) (J_ir - p_i^T J_i)`` (rows with ``p_ir < prune`` dropped: they add
        less than ``prune |J|^2``); products in ``dtype``, returned in theta's dtype."""
        acc = dtype or theta.dtype
        G = torch.zeros(self.dim, self.dim, dtype=acc, device=theta.device)
        for s in range(0, self.n, chunk):
            idx = torch.arange(s, min(self.n, s + chunk))
            J = self.logit_jacobians(theta, idx)
            with torch.no_grad():
                P = torch.softmax(self.logits(theta, self.X[idx]), -1)
                B = P.sqrt()[:, :, None] * (J - torch.einsum("mk,mkd->md", P, J)[:, None, :])
                B = B.reshape(-1, self.dim)[(P > prune).reshape(-1)].to(acc)
                G.addmm_(B.T, B)
        return (G / self.n).to(theta.dtype)

    def curvature(self, theta: Tensor, dtype: torch.dtype | None = None) -> tuple[Tensor, None]:
        """``(C, None)``: the matrix LOO's chord steps and CG's preconditioner factor, the exact
        data Hessian or Gauss-Newton (``curvature`` setting); it covers every parameter."""
        if self.curvature_kind == "exact":
            C = self.data_hessian(theta)
        else:
            C = self.gauss_newton(theta, dtype=dtype)
        return (C if dtype is None else C.to(dtype)), None

    def curvature_support(self) -> None:
        return None

    # -- LiSSA ------------------------------------------------------------------------------------
    def minibatch_hvp(self, theta: Tensor, batch_size: int) -> Callable:
        """``sample_hvp(V, gen)``: column r of V times the Hessian (with L2) of a fresh uniform
        minibatch of ``batch_size`` points (exact HVPs, :func:`infcore.objective.minibatch_hvp_sampler`)."""
        return minibatch_hvp_sampler(self, theta, batch_size)

    def largest_example_eigenvalue(self, theta: Tensor) -> None:
        """No closed form for the CNN (None: LiSSA's diagnostics use the full Hessian's)."""
        return None

    # -- predictions ----------------------------------------------------------------------------
    def probs(self, theta: Tensor, X: Tensor | None = None) -> Tensor:
        X = self.X if X is None else X
        with torch.no_grad():
            return torch.cat([torch.softmax(self.logits(theta, X[r]), -1) for r in self._rows(X.shape[0])])

    def predict(self, theta: Tensor, X: Tensor) -> Tensor:
        return self.probs(theta, X).argmax(-1)

    def accuracy(self, theta: Tensor, X: Tensor, y: Tensor) -> float:
        return float(self.predict(theta, X).eq(y).double().mean())
