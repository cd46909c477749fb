"""Training objectives: losses, gradients, Hessian-vector products.

Two kinds of objective share one interface. ``LogisticObjective`` is multinomial logistic
regression without bias, with closed-form gradients and Hessian-vector products (exact,
fast, float64); ``ModuleObjective`` wraps any ``nn.Module`` and loss function and gets the
same quantities by autograd (HVP by double backward, per-example gradients by
``torch.func.vmap``). Both describe the regularized training objective

    F(theta) = (1/n) sum_i l(z_i; theta) + (l2 / 2) ||theta||^2

and expose the per-point regularized loss ``l(z_i; theta) + (l2/2)||theta||^2`` whose
gradient ``g_i`` enters the influence formula (docs/design.md). Parameters are one flat vector.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

DEFAULT_CHUNK_BYTES = 256 * 2**20


def _chunk_rows(n: int, row_bytes: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    return max(1, min(n, chunk_bytes // max(1, row_bytes)))


class LogisticObjective:
    """Multinomial logistic regression without bias, mean cross-entropy plus L2.

    The parameter vector is ``W.reshape(-1)`` for a weight ``W`` of shape (k, d), the
    layout of ``nn.Linear(d, k, bias=False).weight``; logits are ``X @ W.T``.

    With ``p_i = softmax(W x_i)`` and ``y_i`` one-hot:

    * per-point gradient ``g_i = (p_i - y_i) x_i^T + l2 W`` (flattened),
    * Hessian ``H = (1/n) sum_i (diag(p_i) - p_i p_i^T) (x) x_i x_i^T + l2 I``,
    * ``H v`` for ``V = v.view(k, d)``: ``(1/n) sum_i A_i V x_i x_i^T + l2 V`` with
      ``A_i = diag(p_i) - p_i p_i^T``, computed with two matrix products.

    Args:
        X: (n, d) inputs.
        y: (n,) integer labels in [0, k).
        n_classes: number of classes k.
        l2: L2 coefficient of the objective (paper: 0.01).
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float):
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n, d), got shape {tuple(X.shape)}")
        if y.shape != (X.shape[0],):
            raise ValueError(f"y must have shape ({X.shape[0]},), got {tuple(y.shape)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_classes):
            raise ValueError(f"labels must lie in [0, {n_classes}), got [{int(y.min())}, {int(y.max())}]")
        self.X = X
        self.y = y.long()
        self.n_classes = int(n_classes)
        self.l2 = float(l2)
        self.n, self.d = X.shape
        self.dim = self.n_classes * self.d
        self._Y = torch.nn.functional.one_hot(self.y, self.n_classes).to(X.dtype)

    # -- helpers -------------------------------------------------------------------------
    def weight(self, theta: torch.Tensor) -> torch.Tensor:
        return theta.view(*theta.shape[:-1], self.n_classes, self.d)

    def zeros(self) -> torch.Tensor:
        return torch.zeros(self.dim, dtype=self.X.dtype, device=self.X.device)

    def probs(self, theta: torch.Tensor, X: torch.Tensor | None = None) -> torch.Tensor:
        X = self.X if X is None else X
        return torch.softmax(X @ self.weight(theta).T, dim=1)

    # -- objective -----------------------------------------------------------------------
    def example_losses(self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Unregularized cross-entropy of every point; theta may be (dim,) or (m, dim)."""
        W = self.weight(theta)
        logits = torch.matmul(X, W.transpose(-1, -2))  # (..., n, k)
        lse = torch.logsumexp(logits, dim=-1)
        picked = logits.gather(-1, y.long().expand(*logits.shape[:-1]).unsqueeze(-1)).squeeze(-1)
        return lse - picked

    def data_loss(self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean unregularized cross-entropy on (X, y): the test loss of the paper."""
        return self.example_losses(theta, X, y).mean(dim=-1)

    def data_grad(self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Gradient of ``data_loss`` (no L2 term): ``(1/m) sum (p_i - y_i) x_i^T``."""
        Y = torch.nn.functional.one_hot(y.long(), self.n_classes).to(X.dtype)
        R = torch.softmax(X @ self.weight(theta).T, dim=1) - Y
        return (R.T @ X).reshape(-1) / X.shape[0]

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        return self.data_loss(theta, self.X, self.y) + 0.5 * self.l2 * (theta * theta).sum(-1)

    def grad(self, theta: torch.Tensor) -> torch.Tensor:
        return self.data_grad(theta, self.X, self.y) + self.l2 * theta

    def loss_and_grad(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.X @ self.weight(theta).T
        lse = torch.logsumexp(logits, dim=1)
        loss = (lse - logits.gather(1, self.y[:, None]).squeeze(1)).mean()
        R = torch.exp(logits - lse[:, None]) - self._Y
        g = (R.T @ self.X).reshape(-1) / self.n + self.l2 * theta
        return loss + 0.5 * self.l2 * theta.dot(theta), g

    def residuals(self, theta: torch.Tensor) -> torch.Tensor:
        """(n, k) matrix ``p_i - y_i`` at theta."""
        return self.probs(theta) - self._Y

    def per_example_grads(self, theta: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Gradients ``g_i`` of every point's regularized loss, shape (m, dim)."""
        X = self.X if idx is None else self.X[idx]
        Y = self._Y if idx is None else self._Y[idx]
        R = torch.softmax(X @ self.weight(theta).T, dim=1) - Y
        G = (R[:, :, None] * X[:, None, :]).reshape(X.shape[0], self.dim)
        return G + self.l2 * theta

    def per_example_dot(self, theta: torch.Tensor, S: torch.Tensor, idx: torch.Tensor | None = None,
                        chunk: int | None = None) -> torch.Tensor:
        """``g_i . s`` for every point i and every column s of S (dim,) or (dim, m).

        Uses ``g_i . s = (p_i - y_i)^T S_mat x_i + l2 theta . s`` without materializing the
        (n, dim) gradient matrix.
        """
        single = S.ndim == 1
        S2 = S[:, None] if single else S
        m = S2.shape[1]
        Smat = S2.T.reshape(m, self.n_classes, self.d)  # (m, k, d)
        rows = torch.arange(self.n, device=self.X.device) if idx is None else torch.as_tensor(idx)
        chunk = chunk or _chunk_rows(len(rows), 8 * self.n_classes * (m + 2))
        out = []
        for start in range(0, len(rows), chunk):
            r = rows[start:start + chunk]
            X = self.X[r]
            R = torch.softmax(X @ self.weight(theta).T, dim=1) - self._Y[r]  # (c, k)
            XS = torch.einsum("cd,mkd->cmk", X, Smat)  # (c, m, k)
            out.append(torch.einsum("ck,cmk->cm", R, XS))
        val = torch.cat(out) + self.l2 * (theta @ S2)[None, :]
        return val[:, 0] if single else val

    # -- second order --------------------------------------------------------------------
    def hvp(self, theta: torch.Tensor, v: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """``H v`` (including the L2 term); v is (dim,) or (dim, m); idx: minibatch rows."""
        X = self.X if idx is None else self.X[idx]
        P = torch.softmax(X @ self.weight(theta).T, dim=1)
        return _logistic_hvp(X, P, v, self.n_classes, self.d) + self.l2 * v

    def hvp_fn(self, theta: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """``v -> H v`` at a fixed theta with the softmax computed once (two matrix products
        per call instead of three); what CG and power iteration use."""
        P = self.probs(theta)
        X, k, d, l2 = self.X, self.n_classes, self.d, self.l2
        csr = self._csr()
        if csr is None or X.device.type != "cpu":
            return lambda v: _logistic_hvp(X, P, v, k, d) + l2 * v
        Xs, XTs = csr

        def matvec(v: torch.Tensor) -> torch.Tensor:
            if v.ndim != 1:
                return _logistic_hvp(X, P, v, k, d) + l2 * v
            Z = torch.sparse.mm(Xs, v.view(k, d).T.contiguous())
            Q = P * Z - P * (P * Z).sum(1, keepdim=True)
            return torch.sparse.mm(XTs, Q).T.reshape(-1) / X.shape[0] + l2 * v

        return matvec

    def _csr(self):
        """CSR copies of X and X^T when X is sparse enough to pay (MNIST: 19% non-zero, HVPs
        about 2x faster, same float64 arithmetic up to summation order); None otherwise."""
        if getattr(self, "_csr_cache", False) is False:
            density = int(torch.count_nonzero(self.X)) / max(1, self.X.numel())
            if density < 0.35 and self.X.shape[0] * self.d >= 10**6:
                import warnings
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # "CSR support is in beta"
                    X = self.X
                    Xs = _csr_by_rows(lambda a, b: X[a:b], X.shape[0], X.shape[1])
                    XTs = _csr_by_rows(lambda a, b: X[:, a:b].T.contiguous(), X.shape[1], X.shape[0])
                    self._csr_cache = (Xs, XTs)
            else:
                self._csr_cache = None
        return self._csr_cache

    def hessian(self, theta: torch.Tensor, idx: torch.Tensor | None = None,
                dtype: torch.dtype | None = None) -> torch.Tensor:
        """Explicit (dim, dim) Hessian; ``dtype=torch.float32`` forms the products in float32.

        Blocks: ``H[(a, :), (b, :)] = (1/n) X^T diag(A_ab) X`` with
        ``A_ab = p_a (delta_ab - p_b)``; layout matches ``theta.view(k, d)``. Only the
        ``k (k - 1) / 2`` off-diagonal blocks are multiplied out, each as the symmetric
        ``-(X sqrt(p_a p_b))^T (X sqrt(p_a p_b))`` (upper tiles only); the diagonal blocks
        follow from ``sum_b A_ab = 0``; input columns that are zero in every row (MNIST: 69
        border pixels) are skipped, and rows are grouped by their support (``_row_groups``).
        On MNIST (float32) 8.4 s instead of 27.8 s for the k (k + 1) / 2 plain block products.
        """
        X = self.X if idx is None else self.X[idx]
        P = torch.softmax(X @ self.weight(theta).T, dim=1)
        Hd = _logistic_data_hessian(X, P, dtype=dtype)
        Hd.diagonal().add_(self.l2)
        return Hd

    def example_hessian_factor(self, theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """U_i with ``U_i U_i^T = A_i (x) x_i x_i^T``, the data Hessian of point i; (m, dim, k)."""
        X = self.X[idx]
        P = torch.softmax(X @ self.weight(theta).T, dim=1)  # (m, k)
        # A = diag(p) - p p^T = (diag(sqrt p)) (I - sqrt p sqrt p^T) (diag(sqrt p)), and the middle
        # factor is a projector (sum p = 1), so C = diag(sqrt p) (I - sqrt p sqrt p^T) has C C^T = A.
        sp = P.sqrt()
        eye = torch.eye(self.n_classes, dtype=X.dtype, device=X.device)
        C = sp[:, :, None] * (eye - sp[:, :, None] * sp[:, None, :])  # (m, k, k)
        # U[(a, j), r] = C[a, r] x_j
        return (C[:, :, None, :] * X[:, None, :, None]).reshape(X.shape[0], self.dim, self.n_classes)

    def kfac_preconditioner(self, theta: torch.Tensor, damping: float = 0.0) -> Callable:
        """Kronecker-factored approximation ``(E[A] (x) E[x x^T]) + l2 I`` inverted by eigh.

        A cheap preconditioner for CG: the exact Hessian's data part is
        ``(1/n) sum A_i (x) x_i x_i^T``; K-FAC replaces it by the product of the means.
        """
        P = self.probs(theta)
        A = (torch.diag_embed(P) - P[:, :, None] * P[:, None, :]).mean(0)
        ea, Ua = torch.linalg.eigh(A)
        if getattr(self, "_xx_eigh", None) is None:  # E[x x^T] does not depend on theta
            self._xx_eigh = torch.linalg.eigh((self.X.T @ self.X) / self.n)
        es, Us = self._xx_eigh
        denom = ea.clamp_min(0)[:, None] * es.clamp_min(0)[None, :] + self.l2 + damping

        def apply(r: torch.Tensor) -> torch.Tensor:
            R = r.view(self.n_classes, self.d)
            Z = Ua.T @ R @ Us
            return (Ua @ (Z / denom) @ Us.T).reshape(-1)

        return apply

    def used_columns(self) -> torch.Tensor:
        """Indices of the input columns that are non-zero in some training row (cached); the
        others add nothing to logits, gradients or the data Hessian."""
        if getattr(self, "_used_columns", None) is None:
            self._used_columns = (self.X != 0).any(0).nonzero().reshape(-1)
        return self._used_columns

    def accuracy(self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> float:
        return float((X @ self.weight(theta).T).argmax(1).eq(y).double().mean())

    def predict(self, theta: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        return (X @ self.weight(theta).T).argmax(1)


def _csr_by_rows(rows: Callable[[int, int], torch.Tensor], n_rows: int, n_cols: int,
                 chunk_bytes: int = 32 * 2**20) -> torch.Tensor:
    """CSR matrix assembled from dense row blocks ``rows(a, b)``, so that no dense copy larger
    than ``chunk_bytes`` is made (X^T of MNIST without a second 345 MB array)."""
    step = max(1, chunk_bytes // (8 * max(1, n_cols)))
    crow, cols, vals, offset = [torch.zeros(1, dtype=torch.long)], [], [], 0
    for a in range(0, n_rows, step):
        block = rows(a, min(a + step, n_rows)).to_sparse_csr()
        crow.append(block.crow_indices()[1:] + offset)
        cols.append(block.col_indices())
        vals.append(block.values())
        offset += block.values().numel()
    return torch.sparse_csr_tensor(torch.cat(crow), torch.cat(cols), torch.cat(vals),
                                   size=(n_rows, n_cols))


def _gram_upper(Y: torch.Tensor, tiles: int = 4) -> torch.Tensor:
    """``Y^T Y`` from its upper tiles (about (tiles + 1) / (2 tiles) of the products), the
    lower ones mirrored."""
    c = Y.shape[1]
    tiles = max(1, min(tiles, c // 64))
    e = [round(i * c / tiles) for i in range(tiles + 1)]
    C = torch.empty(c, c, dtype=Y.dtype, device=Y.device)
    for s in range(tiles):
        C[e[s]:e[s + 1], e[s]:] = Y[:, e[s]:e[s + 1]].T @ Y[:, e[s]:]
    for s in range(1, tiles):
        C[e[s]:e[s + 1], :e[s]] = C[:e[s], e[s]:e[s + 1]].T
    return C


def _row_groups(nz: torch.Tensor, max_groups: int = 16, min_rows: int = 2048) -> list[torch.Tensor]:
    """Rows split into groups with small column supports, for sparse X whose non-zeros sit in
    a contiguous stretch of columns that varies by row (images: a digit's first and last
    rows). Rows are sorted by their first non-zero column and cut into equal groups; used
    only when that saves at least 15% of the ``rows x support^2`` work, else one group."""
    n = nz.shape[0]
    groups = min(max_groups, n // min_rows)
    everything = [torch.arange(n, device=nz.device)]
    if groups < 2:
        return everything
    cols = torch.arange(nz.shape[1], device=nz.device)
    first = torch.where(nz, cols, nz.shape[1]).amin(1)
    parts = first.argsort().tensor_split(groups)
    work = sum(len(g) * int(nz[g].any(0).sum()) ** 2 for g in parts)
    return list(parts) if work <= 0.85 * n * int(nz.any(0).sum()) ** 2 else everything


def class_major_index(cols: torch.Tensor, d: int, k: int) -> torch.Tensor:
    """Parameter indices ``a * d + j`` (``theta.view(k, d)`` layout) of the input columns
    ``cols``, class by class: the rows and columns of a reduced (k c, k c) Hessian."""
    return (cols[None, :] + d * torch.arange(k, device=cols.device)[:, None]).reshape(-1)


def _logistic_data_hessian(X: torch.Tensor, P: torch.Tensor, dtype: torch.dtype | None = None,
                           reduced: bool = False):
    """``(1/n) sum_i (diag(p_i) - p_i p_i^T) (x) x_i x_i^T`` as a (k d, k d) matrix in X's dtype,
    the products formed in ``dtype`` (see ``LogisticObjective.hessian``). ``reduced=True``
    returns ``(H_c, cols)`` instead, in ``dtype``: the (k c, k c) matrix over the c input
    columns ``cols`` that are non-zero somewhere (the others' rows and columns are zero)."""
    n, d = X.shape
    k = P.shape[1]
    nz = X != 0
    cols = nz.any(0).nonzero().reshape(-1)
    c = cols.numel()
    pairs = [(a, b) for a in range(k) for b in range(a + 1, k)]
    acc = dtype or X.dtype
    Bp = torch.zeros(len(pairs), c * c, dtype=acc, device=X.device)  # -sum of the Gram blocks
    for rows in _row_groups(nz[:, cols]):
        sub = nz[rows][:, cols].any(0).nonzero().reshape(-1)  # support of the group, in [0, c)
        Xg = X[rows][:, cols[sub]].to(acc)
        Gs = torch.empty(len(pairs), sub.numel(), sub.numel(), dtype=acc, device=X.device)
        for j, (a, b) in enumerate(pairs):
            w = (P[rows, a] * P[rows, b]).sqrt().to(acc)
            Gs[j] = _gram_upper(Xg * w[:, None])
        if sub.numel() == c:
            Bp += Gs.view(len(pairs), -1)
        else:
            Bp.index_add_(1, (sub[:, None] * c + sub[None, :]).reshape(-1), Gs.view(len(pairs), -1))
    Hc = torch.zeros(k, c, k, c, dtype=acc if reduced else X.dtype, device=X.device)
    for j, (a, b) in enumerate(pairs):
        blk = Bp[j].view(c, c).to(Hc.dtype).div_(-n)
        Hc[a, :, b, :] = blk
        Hc[b, :, a, :] = blk  # symmetric: H_ba = H_ab^T = H_ab
        Hc[a, :, a, :] -= blk  # rows of A_i sum to zero: H_aa = -sum_b H_ab
        Hc[b, :, b, :] -= blk
    del Bp
    Hc = Hc.view(k * c, k * c)
    if reduced:
        return Hc, cols
    if c == d:
        return Hc
    keep = class_major_index(cols, d, k)
    H = torch.zeros(k * d, k * d, dtype=X.dtype, device=X.device)
    H[keep[:, None], keep[None, :]] = Hc
    return H


def _logistic_hvp(X: torch.Tensor, P: torch.Tensor, v: torch.Tensor, k: int, d: int) -> torch.Tensor:
    """``(1/m) sum_i (diag(p_i) - p_i p_i^T) V x_i x_i^T`` for v (dim,) or (dim, r)."""
    m = X.shape[0]
    if v.ndim == 1:
        Z = X @ v.view(k, d).T  # (m, k): rows V x_i
        Q = P * Z - P * (P * Z).sum(1, keepdim=True)  # A_i V x_i
        return (Q.T @ X).reshape(-1) / m
    r = v.shape[1]
    V = v.T.reshape(r, k, d)
    Z = torch.einsum("md,rkd->rmk", X, V)
    Q = P * Z - P * (P * Z).sum(-1, keepdim=True)
    return torch.einsum("rmk,md->rkd", Q, X).reshape(r, -1).T / m


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
    "LogisticObjective", "ModuleObjective", "ParamSpec", "flatten_params", "unflatten",
    "cross_entropy",
]
