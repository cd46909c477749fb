"""Multinomial logistic regression without bias: the linear model of Figure 2.

Closed forms for everything the pipeline asks of an objective (:class:`infcore.objective.
Objective`): gradients, Hessian-vector products (CSR on sparse inputs), the explicit Hessian
(symmetric block products over the used input columns), per-point gradients and curvature,
the mean data gradient at a stack of parameter vectors (LOO passes, with a float32 steering
variant) and the largest single-point eigenvalue (LiSSA's scale condition).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

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

    # -- the objective interface: L2 term, null space, curvature to factor -----------------
    convex = True

    def reg_diagonal(self) -> torch.Tensor:
        """(dim,) diagonal of the L2 term's Hessian: ``l2`` everywhere."""
        return torch.full((self.dim,), self.l2, dtype=self.X.dtype, device=self.X.device)

    def reg_grad(self, theta: torch.Tensor) -> torch.Tensor:
        """Gradient of the L2 term, ``l2 theta`` (rows of a stack too)."""
        return self.l2 * theta

    def null_space(self) -> torch.Tensor | None:
        """Directions along which H is exactly singular: none (l2 > 0 covers every weight)."""
        return None

    def curvature(self, theta: torch.Tensor, dtype: torch.dtype | None = torch.float32):
        """``(C, keep)``: the data Hessian (exact here) over the parameters ``keep`` whose input
        column is non-zero somewhere, products in ``dtype`` (``keep`` None: all of them). The
        other rows and columns of the data Hessian are zero."""
        Hc, cols = _logistic_data_hessian(self.X, self.probs(theta), dtype=dtype, reduced=True)
        return Hc, (None if cols.numel() == self.d else class_major_index(cols, self.d, self.n_classes))

    def curvature_support(self) -> torch.Tensor | None:
        """Parameter indices ``curvature`` covers: those whose input column is non-zero in
        some training row (None: all)."""
        cols = self.used_columns()
        return None if cols.numel() == self.d else class_major_index(cols, self.d, self.n_classes)

    # -- LOO passes: stacks of parameter vectors ---------------------------------------------
    point_curvature_rank = property(lambda self: self.n_classes)

    def data_grads(self, thetas: torch.Tensor) -> torch.Tensor:
        """Mean data gradient over all n points at each row of thetas, float64: (m, dim)."""
        m, k, d = thetas.shape[0], self.n_classes, self.d
        W = thetas.reshape(m * k, d)
        logits = (self.X @ W.T).view(self.n, m, k)
        P = torch.softmax(logits, dim=2)
        P -= self._Y[:, None, :]
        return (P.view(self.n, m * k).T @ self.X).reshape(m, k * d) / self.n

    def steering_data_grads(self, thetas: torch.Tensor, theta_hat: torch.Tensor,
                            D_hat: torch.Tensor) -> torch.Tensor:
        """``data_grads`` to float32 accuracy of the difference from theta_hat, for passes that
        only steer a step: ``D_hat + (D(theta) - D(theta_hat))`` with the difference in float32,
        ``p(theta) - p_hat = p_hat (e - s) / (1 + s)``, ``e = expm1(X dW^T)``, ``s = p_hat . e``
        (no cancellation). The float32 copies are cached for the given theta_hat."""
        if getattr(self, "_steer_cache", None) is None or self._steer_cache[0] is not theta_hat:
            cols = self.used_columns()  # input columns that are zero everywhere contribute nothing
            self._steer_cache = (theta_hat, cols, self.X[:, cols].to(torch.float32),
                                 self.probs(theta_hat).to(torch.float32))
        _, cols, X32, P32 = self._steer_cache
        m, k, c = thetas.shape[0], self.n_classes, cols.numel()
        dW = self.weight(thetas - theta_hat)[:, :, cols].to(torch.float32).reshape(m * k, c)
        E = torch.expm1((X32 @ dW.T).view(self.n, m, k))
        S = torch.einsum("nmk,nk->nm", E, P32)[:, :, None]
        E.sub_(S).mul_(P32[:, None, :]).div_(S.add_(1.0))
        dD = torch.zeros(m, k, self.d, dtype=thetas.dtype, device=thetas.device)
        dD[:, :, cols] = (E.view(self.n, m * k).T @ X32).view(m, k, c).to(thetas.dtype)
        return D_hat + dD.view(m, k * self.d) / self.n

    def point_grads(self, thetas: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Row j: data gradient (no L2) of point ``idx[j]`` at ``thetas[j]``."""
        X, Y = self.X[idx], self._Y[idx]
        logits = torch.einsum("md,mkd->mk", X, self.weight(thetas))
        R = torch.softmax(logits, 1) - Y
        return (R[:, :, None] * X[:, None, :]).reshape(len(idx), self.dim)

    def point_hvp(self, thetas: torch.Tensor, idx: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        """Row j: point ``idx[j]``'s data Hessian at ``thetas[j]`` times ``V[j]`` (rank <= k)."""
        X = self.X[idx]
        p = torch.softmax(torch.einsum("md,mkd->mk", X, self.weight(thetas)), 1)
        z = torch.einsum("md,mkd->mk", X, self.weight(V))
        a = p * z - p * (p * z).sum(1, keepdim=True)
        return (a[:, :, None] * X[:, None, :]).reshape(len(idx), self.dim)

    def point_hessian(self, theta: torch.Tensor, i: int) -> torch.Tensor:
        """Point i's data Hessian at theta, (dim, dim)."""
        U = self.example_hessian_factor(theta, torch.as_tensor([i]))[0]
        return U @ U.T

    def data_hessian(self, theta: torch.Tensor) -> torch.Tensor:
        """The data Hessian (no L2) at theta, (dim, dim), float64."""
        H = self.hessian(theta)
        H.diagonal().sub_(self.l2)
        return H

    def gauss_newton(self, theta: torch.Tensor) -> torch.Tensor:
        """The Gauss-Newton data matrix ``(1/n) sum_i J_i^T A_i J_i``: for a linear model under
        softmax cross-entropy the logits are linear in theta, so it is the data Hessian itself."""
        return self.data_hessian(theta)

    # -- LiSSA ---------------------------------------------------------------------------------
    def minibatch_hvp(self, theta: torch.Tensor, batch_size: int) -> Callable:
        """``sample_hvp(V, gen)`` for LiSSA: column r of V times the Hessian (with L2 term) of
        a fresh uniformly sampled minibatch of ``batch_size`` training points."""
        k, d = self.n_classes, self.d

        def sample(V: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            R = V.shape[1]
            idx = torch.randint(self.n, (R, batch_size), generator=gen).to(self.X.device)
            X = self.X[idx]  # (R, b, d)
            P = torch.softmax(torch.einsum("rbd,kd->rbk", X, self.weight(theta)), -1)
            Vm = V.T.reshape(R, k, d)
            Z = torch.einsum("rbd,rkd->rbk", X, Vm)
            Q = P * Z - P * (P * Z).sum(-1, keepdim=True)
            out = torch.einsum("rbk,rbd->rkd", Q, X).reshape(R, -1).T / batch_size
            return out + self.l2 * V

        return sample

    def largest_example_eigenvalue(self, theta: torch.Tensor) -> float:
        """Largest eigenvalue of any single training point's Hessian (with L2): the scale LiSSA
        with batch size 1 must exceed. Closed form:
        ``lambda_max(A_i (x) x_i x_i^T) = lambda_max(A_i) ||x_i||^2``."""
        lam = torch.zeros(self.n, dtype=self.X.dtype)
        for s in range(0, self.n, 8192):
            P = self.probs(theta, self.X[s:s + 8192])
            A = torch.diag_embed(P) - P[:, :, None] * P[:, None, :]
            lam[s:s + 8192] = torch.linalg.eigvalsh(A)[:, -1] * (self.X[s:s + 8192] ** 2).sum(1)
        return float(lam.max()) + self.l2

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
