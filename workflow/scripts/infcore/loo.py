"""Certified leave-one-out retraining, batched over removed points, for any objective of the
interface (:class:`infcore.objective.Objective`).

For a removed point i the LOO objective is

    F_-i(theta) = (1/(n-1)) sum_{j != i} l_j(theta) + (l2/2) ||theta||^2,
    grad F_-i(theta) = (n D(theta) - d_i(theta)) / (n-1) + l2 theta,

with ``D`` the mean data gradient over all n points and ``d_i`` point i's data gradient.
Starting from theta_hat, every removed point takes chord-Newton steps
``theta <- theta - M_i^{-1} grad F_-i(theta)`` with one matrix factored once:
``M = (n/(n-1)) C(theta_hat) + diag(r) + U U^T`` (Cholesky; C the objective's curvature matrix,
the exact data Hessian for logistic regression, r the L2 diagonal, U the exact null directions
of H, along which every gradient vanishes), and ``M_i = M - H_i(theta) / (n-1)``
the removed point's own curvature: exact by Woodbury when the objective gives it as a low-rank
factor and that matters (n small relative to the dimension), otherwise one Neumann correction
(an extra solve with M, no pass over the data; it converges because ``H_data >= H_i / n``).

The removed points advance together: a pass over the data evaluates the gradients of all
active points with two matrix products, and all steps share one solve. A pass that only
steers the next step (its gradient far above ``tol``) may run in float32 on the difference
``D(theta) - D(theta_hat)`` (softmax differences by ``expm1``; error ~1e-7 of the
difference, far below what a chord step needs); a pass that may certify runs in float64
from scratch. Each point stops when a float64 pass gives ``max |grad F_-i| <= tol``, the
certificate recorded per point. The Hessian that forms M is accumulated and factored in
float32 (it only sets the step, not the answer).

Non-convex objectives (``obj.convex`` False: the certified CNN) take no unglobalized step: each
removed point runs L-BFGS on its own LOO objective from theta_hat with ``M^{-1}`` as the initial
inverse Hessian and a line search that never leaves descent (``LooSolver._run_nonconvex``), to
the same float64 certificate; the distance moved against the first chord step is the basin check.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class LooResult:
    """Leave-one-out optima for the removed points, in the order given.

    Attributes:
        indices: removed training points (m,).
        thetas: (m, dim) LOO optima.
        grad_maxnorm: (m,) ``max |grad F_-i(theta_-i)|`` from a float64 pass, the certificate.
        steps: (m,) chord steps taken.
        converged: (m,) certificate below tol.
        seconds: wall time, and ``setup_seconds`` for the Hessian and its factor.
        passes64, passes32: (m,) passes over the data per point in float64 / float32.
        distance: (m,) ``||theta_-i - theta_hat||``; first_step: (m,) the norm of the first
            chord step from theta_hat (the influence function's displacement when M is the
            exact Hessian); their ratio near 1 says the optimum is the one the influence
            function describes, in theta_hat's basin.
        left_basin: (m,) non-convex objectives: the path went farther than ``BASIN_LIMIT``
            first steps from theta_hat, where the point stops uncertified (reported, not
            dropped): its optimum, if any, is not the one the influence function describes.
    """

    indices: torch.Tensor
    thetas: torch.Tensor
    grad_maxnorm: torch.Tensor
    steps: torch.Tensor
    converged: torch.Tensor
    seconds: float
    setup_seconds: float
    passes64: torch.Tensor | None = None
    passes32: torch.Tensor | None = None
    distance: torch.Tensor | None = None
    first_step: torch.Tensor | None = None
    left_basin: torch.Tensor | None = None

    def summary(self) -> dict:
        m = int(self.indices.numel())
        out = {"points": m, "seconds": self.seconds, "setup_seconds": self.setup_seconds,
               "max_grad_maxnorm": float(self.grad_maxnorm.max()) if m else 0.0,
               "all_converged": bool(self.converged.all()),
               "mean_steps": float(self.steps.double().mean()) if m else 0.0}
        if self.passes64 is not None and m:
            out.update(mean_passes64=float(self.passes64.double().mean()),
                       mean_passes32=float(self.passes32.double().mean()))
        if self.left_basin is not None:
            out["left_basin"] = int(self.left_basin.sum())
        return out


# Non-convex LOO: a path farther than this many first (influence) steps from theta_hat has left
# the region the influence function describes; the point stops there, reported uncertified.
BASIN_LIMIT = 5.0


def chord_factor(obj, theta_hat: torch.Tensor,
                 hessian_dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
    """Lower Cholesky factor of ``M = (n/(n-1)) C(theta_hat) + diag(r) + U U^T``, the chord
    matrix shared by every removed point (C: ``obj.curvature``, r: ``obj.reg_diagonal()``, U:
    ``obj.null_space()``), products in ``hessian_dtype`` (float32 unless that is not positive
    definite, e.g. a tiny l2; then float64). Compute it once and pass it as
    ``LooSolver(factor=...)`` to shards that would otherwise each form the curvature. Where
    the curvature covers only the parameters ``keep`` (logistic regression: inputs that are
    non-zero somewhere), M is ``r`` on the diagonal of the others, and zero off it."""
    n = obj.n
    reg = obj.reg_diagonal()
    Hc, keep = obj.curvature(theta_hat, dtype=hessian_dtype)
    rk = reg if keep is None else reg[keep]
    Hc.mul_(n / (n - 1)).diagonal().add_(rk.to(Hc.dtype) if not _uniform(rk) else float(rk[0]))
    U = obj.null_space()
    if U is not None:
        Uk = U if keep is None else U[keep]
        Hc += (Uk @ Uk.T).to(Hc.dtype)
    Lc, info = torch.linalg.cholesky_ex(Hc)
    if int(info) != 0 and Hc.dtype != torch.float64:  # float32 round-off broke definiteness
        Lc, info = torch.linalg.cholesky_ex(Hc.to(torch.float64))
    if int(info) != 0:
        raise ValueError("LOO chord matrix is not positive definite; is l2 > 0, and is the fit a "
                         "minimum (train.json: the certificate's smallest eigenvalue)?")
    if keep is None:
        return Lc
    L = torch.zeros(obj.dim, obj.dim, dtype=Lc.dtype, device=Lc.device)
    if _uniform(reg):
        L.diagonal().fill_(float(reg[0]) ** 0.5)
    else:
        L.diagonal().copy_(reg.to(torch.float64).sqrt().to(Lc.dtype))
    L[keep[:, None], keep[None, :]] = Lc
    return L


def _uniform(r: torch.Tensor) -> bool:
    """All entries equal (logistic regression: l2 everywhere), so that it is added as a scalar,
    bit for bit as before the interface existed."""
    return bool(r.numel()) and bool((r == r[0]).all())


@dataclass
class _Batch:
    """Points in flight: positions in the index list, iterates, LOO gradients, their max-norm,
    the observed contraction, and the Woodbury terms (U, Z, S) when used."""

    pos: torch.Tensor
    T: torch.Tensor
    G: torch.Tensor
    gm: torch.Tensor
    rho: torch.Tensor
    W: tuple | None = None

    def __len__(self) -> int:
        return int(self.pos.numel())

    def select(self, mask: torch.Tensor) -> _Batch:
        W = None if self.W is None else tuple(w[mask] for w in self.W)
        return _Batch(self.pos[mask], self.T[mask], self.G[mask], self.gm[mask], self.rho[mask], W)

    @staticmethod
    def join(batches: list[_Batch]) -> _Batch:
        W = None
        if batches[0].W is not None:
            W = tuple(torch.cat([b.W[j] for b in batches]) for j in range(3))
        return _Batch(*(torch.cat([getattr(b, f) for b in batches]) for f in ("pos", "T", "G", "gm", "rho")), W)


class LooSolver:
    """Holds the factored chord matrix so several batches of points can reuse it.

    Args:
        obj: an objective of the interface (n points).
        theta_hat: the full-data optimum.
        hessian_dtype: dtype of the products that form the Hessian (float32 is enough).
        woodbury: the removed point's own curvature exactly (Woodbury, k solves per point
            once) instead of one Neumann correction per step; "auto" when the objective gives
            a low-rank factor of it (``point_curvature_rank``) and n < 4 * dim.
        precision: "float64" (every pass in float64), "mixed" (passes that only steer a
            step in float32, see the module docstring) or "auto" (mixed when X is float64
            and n * dim >= 2**22, where passes dominate).
        factor: a precomputed ``chord_factor(obj, theta_hat)``.
    """

    def __init__(self, obj, theta_hat: torch.Tensor,
                 hessian_dtype: torch.dtype | None = torch.float32, woodbury: bool | str = "auto",
                 log: Callable[[str], None] | None = None, factor: torch.Tensor | None = None,
                 precision: str = "auto"):
        if obj.n < 2:
            raise ValueError("need at least 2 training points for leave-one-out")
        if precision not in ("auto", "float64", "mixed"):
            raise ValueError(f"precision must be 'auto', 'float64' or 'mixed', got {precision!r}")
        t0 = time.perf_counter()
        self.obj, self.theta_hat = obj, theta_hat
        self.L = chord_factor(obj, theta_hat, hessian_dtype) if factor is None else factor
        if self.L.shape != (obj.dim, obj.dim):
            raise ValueError(f"factor has shape {tuple(self.L.shape)}, expected ({obj.dim}, {obj.dim})")
        if not self.L.is_floating_point():
            raise TypeError(f"factor must be a floating-point tensor, got {self.L.dtype}")
        rank = getattr(obj, "point_curvature_rank", None)
        self.woodbury = (rank is not None and obj.n < 4 * obj.dim) if woodbury == "auto" else bool(woodbury)
        if precision == "auto":
            precision = "mixed" if (self.theta_hat_dtype(theta_hat) and obj.n * obj.dim >= 2**22) else "float64"
        self.mixed = precision == "mixed"
        self.D_hat = obj.data_grad(theta_hat, obj.X, obj.y)
        self.newton_after, self.newton_max_dim = 4, 1024
        self.neumann_iters = 1
        # a float64 pass is taken when the predicted gradient (last one times the observed
        # contraction) is below tol * certify_margin
        self.certify_margin, self.rho0, self.rho_max = 1.0, 1e-2, 0.1
        self._Minv = self._keep = None
        self.setup_seconds = time.perf_counter() - t0
        if log:
            what = "given chord factor" if factor is not None else f"Hessian {obj.dim}x{obj.dim} and Cholesky"
            log(f"LOO setup: {what} in {self.setup_seconds:.1f} s "
                f"(woodbury={self.woodbury}, precision={precision})")

    @staticmethod
    def theta_hat_dtype(theta_hat: torch.Tensor) -> bool:
        return theta_hat.dtype == torch.float64

    # -- passes over the data --------------------------------------------------------------
    def _loo_grads(self, T: torch.Tensor, idx: torch.Tensor, mixed: torch.Tensor | None = None) -> torch.Tensor:
        """``grad F_-i`` at the rows of T; rows flagged in ``mixed`` by a float32 pass."""
        n = self.obj.n
        D = torch.empty_like(T)
        exact = torch.ones(T.shape[0], dtype=torch.bool) if mixed is None else ~mixed
        if exact.any():
            D[exact] = self.obj.data_grads(T[exact])
        if mixed is not None and mixed.any():
            Dm = self.obj.steering_data_grads(T[mixed], self.theta_hat, self.D_hat)
            bad = ~torch.isfinite(Dm).all(1)  # float32 overflow far from theta_hat
            if bad.any():
                Dm[bad] = self.obj.data_grads(T[mixed][bad])
            D[mixed] = Dm
        return (n * D - self.obj.point_grads(T, idx)) / (n - 1) + self.obj.reg_grad(T)

    # -- solves ----------------------------------------------------------------------------
    def _msolve(self, G: torch.Tensor) -> torch.Tensor:
        """Rows of ``M^{-1} g`` (in the factor's dtype, returned in G's dtype)."""
        if self._Minv is not None:
            if self._keep is None:
                return (G.to(self._Minv.dtype) @ self._Minv).to(G.dtype)
            out = torch.empty_like(G)
            out[:, self._keep] = (G[:, self._keep].to(self._Minv.dtype) @ self._Minv).to(G.dtype)
            out[:, self._free] = G[:, self._free] / self._free_diag
            return out
        return torch.cholesky_solve(G.T.to(self.L.dtype), self.L).T.to(G.dtype)

    def _step(self, G, T, idx, U, Z, S):
        """Rows of ``M_i^{-1} g``, ``M_i = M - H_i / (n-1)``: Woodbury with U (m, dim, k),
        Z = M^{-1} U, S = (n-1) I - U^T Z; otherwise Neumann ``s <- M^{-1}(g + H_i s / (n-1))``."""
        Y = self._msolve(G)
        if U is not None:
            c = torch.linalg.solve(S, torch.einsum("mpk,mp->mk", U, Y))
            return Y + torch.einsum("mpk,mk->mp", Z, c)
        for _ in range(self.neumann_iters):
            Y = self._msolve(G + self.obj.point_hvp(T, idx, Y) / (self.obj.n - 1))
        return Y

    def _newton_steps(self, T: torch.Tensor, idx: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        """Exact Newton steps with each point's own LOO Hessian at its current iterate; used
        for small models when the chord iteration contracts slowly (a point far from
        theta_hat)."""
        obj, n = self.obj, self.obj.n
        out = torch.empty_like(G)
        for j in range(T.shape[0]):
            H = obj.data_hessian(T[j])
            H = (n * H - obj.point_hessian(T[j], int(idx[j]))) / (n - 1)
            reg = obj.reg_diagonal()
            if _uniform(reg):
                H.diagonal().add_(float(reg[0]))
            else:
                H.diagonal().add_(reg)
            U = obj.null_space()
            if U is not None:  # exact null directions: every gradient is orthogonal to them
                H += U @ U.T
            out[j] = torch.linalg.solve(H, G[j])
        return out

    def _use_inverse(self, m_all: int) -> bool:
        """An explicit M^{-1} (one GEMM per solve) pays when many solves follow: about 2 to
        4 per point per step against the inverse's ~dim^3 / 3 (measured break-even near
        m = dim / 40 at dim 7840)."""
        return (not self.woodbury) and self.obj.dim >= 512 and 40 * m_all >= self.obj.dim

    def run(self, indices, tol: float = 1e-10, max_steps: int = 30, chunk: int | None = None,
            progress: Callable[[int, int, str], None] | None = None) -> LooResult:
        """LOO optima for ``indices`` (any order, repeats allowed).

        Points advance in batches of ``chunk``, all at the same step; once fewer than half of
        a batch is still active, the rest wait for later stragglers so that passes over the
        data stay full."""
        t0 = time.perf_counter()
        obj, n = self.obj, self.obj.n
        idx_all = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if idx_all.numel() and (int(idx_all.min()) < 0 or int(idx_all.max()) >= n):
            raise IndexError(f"removed indices must lie in [0, {n}), got [{int(idx_all.min())}, {int(idx_all.max())}]")
        m_all = idx_all.numel()
        if not obj.convex:
            return self._run_nonconvex(idx_all, tol, max_steps, progress, t0)
        if chunk is None:  # bound the (n, chunk, k) probability block to ~512 MB
            chunk = max(1, min(256, (512 * 2**20) // (3 * 8 * n * getattr(obj, "n_classes", 10))))
        if self._Minv is None and self._use_inverse(m_all):
            self._invert()
        thetas = self.theta_hat[None, :].repeat(m_all, 1)
        gmax = torch.zeros(m_all, dtype=self.theta_hat.dtype)
        steps = torch.zeros(m_all, dtype=torch.long)
        p64 = torch.zeros(m_all, dtype=torch.long)
        p32 = torch.zeros(m_all, dtype=torch.long)
        waiting: list[_Batch] = []
        nxt, done, reported = 0, 0, 0
        while nxt < m_all or waiting:
            if nxt < m_all and sum(len(w) for w in waiting) < chunk:
                pos = torch.arange(nxt, min(m_all, nxt + chunk))
                nxt += pos.numel()
                idx = idx_all[pos]
                T = thetas[pos]
                # the gradient at theta_hat needs no pass over the data, and is exact
                G = (n * self.D_hat[None, :] - obj.point_grads(T, idx)) / (n - 1) + obj.reg_grad(T)
                gm = G.abs().amax(1)
                gmax[pos] = gm
                go = gm > tol
                done += int((~go).sum())
                batch = _Batch(pos[go], T[go], G[go], gm[go], torch.full_like(gm[go], self.rho0))
                if self.woodbury:
                    batch.W = self._woodbury_terms(idx_all[batch.pos])
            else:
                batch = _Batch.join(waiting)
                waiting = []
                if len(batch) > chunk:  # keep the memory bound of one batch
                    head = torch.arange(len(batch)) < chunk
                    batch, waiting = batch.select(head), [batch.select(~head)]
            while len(batch):
                batch, finished = self._advance(batch, idx_all, steps, tol, max_steps, p64, p32, gmax)
                thetas[finished.pos] = finished.T
                done += len(finished)
                if len(batch) and 2 * len(batch) < chunk and (nxt < m_all or waiting):
                    waiting.append(batch)
                    break
            if progress is not None and (done - reported >= chunk or (done == m_all and reported < m_all)):
                reported = done
                el = time.perf_counter() - t0
                rate = done / el if el > 0 else float("inf")
                progress(done, m_all, f"{done}/{m_all} points, {rate:.2f} points/s, "
                         f"ETA {(m_all - done) / rate if rate > 0 else 0:.0f} s, "
                         f"max|grad| {float(gmax.max()):.2e}")
        return LooResult(idx_all, thetas, gmax, steps, gmax <= tol, time.perf_counter() - t0,
                         self.setup_seconds, p64, p32)

    def _first_steps(self, idx: torch.Tensor) -> torch.Tensor:
        """Norms of the first chord step from theta_hat, ``|M^{-1} grad F_-i(theta_hat)|`` (no
        pass over the data): the influence function's displacement when M is the exact
        Hessian, the yardstick of the basin check."""
        if idx.numel() == 0:
            return torch.zeros(0, dtype=self.theta_hat.dtype)
        n, T = self.obj.n, self.theta_hat[None, :].expand(idx.numel(), -1)
        G = (n * self.D_hat[None, :] - self.obj.point_grads(T, idx)) / (n - 1) + self.obj.reg_grad(T)
        return self._msolve(G).norm(dim=1)

    def _run_nonconvex(self, idx_all, tol, max_steps, progress, t0) -> LooResult:
        """Non-convex objectives: every removed point descends its own LOO objective
        (``obj.without(i)``) from theta_hat by L-BFGS whose initial inverse Hessian is the
        chord matrix ``M^{-1}`` (the curvature at theta_hat), with a backtracking line search
        that never leaves descent: the first iteration is the chord (influence) step, later
        ones correct M by the secant pairs of the point's own path, so a point whose
        perturbation is too large for one matrix still converges, without forming its Hessian.
        The certificate is the same float64 full-batch ``max |grad F_-i|``; ``steps`` counts
        iterations, ``passes64`` loss-and-gradient evaluations."""
        m_all = idx_all.numel()
        thetas = self.theta_hat[None, :].repeat(m_all, 1)
        gmax = torch.zeros(m_all, dtype=self.theta_hat.dtype)
        steps = torch.zeros(m_all, dtype=torch.long)
        evals = torch.zeros(m_all, dtype=torch.long)
        left = torch.zeros(m_all, dtype=torch.bool)
        first = self._first_steps(idx_all)
        for pos in range(m_all):
            i = int(idx_all[pos])
            th, gm, it, ne, out = self._precond_lbfgs(self.obj.without(i), tol, max_steps,
                                                      BASIN_LIMIT * float(first[pos]))
            thetas[pos], gmax[pos], steps[pos], evals[pos], left[pos] = th, gm, it, ne, out
            if progress is not None:
                el = time.perf_counter() - t0
                rate = (pos + 1) / el if el > 0 else float("inf")
                progress(pos + 1, m_all, f"{pos + 1}/{m_all} points, {rate:.2f} points/s, "
                         f"ETA {(m_all - pos - 1) / rate if rate > 0 else 0:.0f} s; point {i}: "
                         f"{it} L-BFGS iterations, max|grad| {gm:.2e}"
                         + (f" (left the basin: > {BASIN_LIMIT:g} influence steps away)" if out else ""))
        dist = (thetas - self.theta_hat[None, :]).norm(dim=1)
        return LooResult(idx_all, thetas, gmax, steps, gmax <= tol, time.perf_counter() - t0,
                         self.setup_seconds, evals, torch.zeros_like(evals), dist, first, left)

    def _precond_lbfgs(self, f_obj, tol: float, max_iter: int, max_distance: float = float("inf"),
                       history: int = 20):
        """L-BFGS on ``f_obj`` from theta_hat, ``H0 = M^{-1}``; returns (theta, max|grad|,
        iterations, evaluations, left the basin). Armijo backtracking from the unit step;
        where F no longer resolves the decrease (round-off near the optimum) a step is accepted
        when it lowers the gradient max-norm. Stops uncertified once the iterate is farther
        than ``max_distance`` from theta_hat."""
        theta = self.theta_hat.clone()
        f, g = f_obj.loss_and_grad(theta)
        f, gm, ne = float(f), float(g.abs().max()), 1
        S: list[torch.Tensor] = []
        Y: list[torch.Tensor] = []
        it = 0
        while gm > tol and it < max_iter:
            it += 1
            q = g.clone()
            alphas = []
            for s_, y_ in zip(reversed(S), reversed(Y), strict=True):
                a_ = float(s_ @ q) / float(y_ @ s_)
                alphas.append(a_)
                q -= a_ * y_
            r = self._msolve(q[None, :])[0]
            for (s_, y_), a_ in zip(zip(S, Y, strict=True), reversed(alphas), strict=True):
                r += (a_ - float(y_ @ r) / float(y_ @ s_)) * s_
            d = -r
            slope = float(g @ d)
            if slope >= 0:  # round-off broke descent: restart from M^{-1}
                S.clear()
                Y.clear()
                d = -self._msolve(g[None, :])[0]
                slope = float(g @ d)
            step, accepted = 1.0, False
            for _ in range(40):
                f1, g1 = f_obj.loss_and_grad(theta + step * d)
                f1, gm1 = float(f1), float(g1.abs().max())
                ne += 1
                resolved = abs(step * slope) > 1e-13 * max(1.0, abs(f))
                if (f1 <= f + 1e-4 * step * slope) if resolved else (gm1 < gm and f1 <= f + 1e-14 * max(1.0, abs(f))):
                    accepted = True
                    break
                step *= 0.5
            if not accepted:
                break
            s_, y_ = step * d, g1 - g
            if float(s_ @ y_) > 1e-12 * float(s_.norm() * y_.norm()):
                S.append(s_)
                Y.append(y_)
                if len(S) > history:
                    S.pop(0)
                    Y.pop(0)
            theta, f, g, gm = theta + s_, f1, g1, gm1
            if gm > tol and float((theta - self.theta_hat).norm()) > max_distance:
                return theta, gm, it, ne, True
        return theta, gm, it, ne, False

    def _advance(self, b: _Batch, idx_all, steps, tol, max_steps, p64, p32, gmax):
        """One step and one pass for every point of the batch; returns (still active, finished)."""
        obj = self.obj
        idx = idx_all[b.pos]
        steps[b.pos] += 1
        st = steps[b.pos]
        newton = (st > self.newton_after) & (obj.dim <= self.newton_max_dim)
        if newton.all():
            b.T -= self._newton_steps(b.T, idx, b.G)
        else:
            W = b.W if b.W is not None else (None, None, None)
            if newton.any():
                chord = ~newton
                b.T[newton] -= self._newton_steps(b.T[newton], idx[newton], b.G[newton])
                b.T[chord] -= self._step(b.G[chord], b.T[chord], idx[chord],
                                         *(w[chord] if w is not None else None for w in W))
            else:
                b.T -= self._step(b.G, b.T, idx, *W)
        mixed = None
        if self.mixed:
            # float32 while the next gradient is predicted above tol and the last pass still
            # contracted well (a ratio near 1 means float32 round-off, ~1e-7 of the change
            # from theta_hat, is what is left: only float64 gradients can steer from there)
            mixed = (b.rho * b.gm > tol * self.certify_margin) & (b.rho < self.rho_max) & (st < max_steps)
            if not mixed.any():
                mixed = None
        b.G = self._loo_grads(b.T, idx, mixed)
        gm = b.G.abs().amax(1)
        b.rho = torch.maximum(gm / b.gm.clamp_min(1e-300), torch.full_like(gm, 1e-6))
        b.gm = gm
        exact = torch.ones_like(gm, dtype=torch.bool) if mixed is None else ~mixed
        p64[b.pos[exact]] += 1
        p32[b.pos[~exact]] += 1
        gmax[b.pos[exact]] = gm[exact]
        finished = (exact & (gm <= tol)) | (st >= max_steps)
        return b.select(~finished), b.select(finished)

    def _coupled_dims(self) -> torch.Tensor | None:
        """Parameters the curvature couples (None: all); M is diagonal on the others
        (logistic regression on MNIST: 69 border pixels, 690 of 7840 parameters), so M is
        inverted without them."""
        return self.obj.curvature_support()

    def _invert(self) -> None:
        keep = self._coupled_dims()
        self._keep = keep
        self._Minv = torch.cholesky_inverse(self.L if keep is None else self.L[keep][:, keep])
        if keep is not None:  # M is diagonal (L_jj^2) on the other dims
            self._free = torch.ones(self.obj.dim, dtype=torch.bool)
            self._free[keep] = False
            self._free_diag = self.L.diagonal()[self._free].to(self.theta_hat.dtype) ** 2

    def _woodbury_terms(self, idx: torch.Tensor):
        """U (m, dim, k) with U U^T = H_i(theta_hat), Z = M^{-1} U, S = (n-1) I - U^T Z."""
        obj, n = self.obj, self.obj.n
        U = obj.example_hessian_factor(self.theta_hat, idx)
        mm, p, k = U.shape
        Z = torch.cholesky_solve(U.permute(1, 0, 2).reshape(p, mm * k).to(self.L.dtype), self.L)
        Z = Z.to(U.dtype).reshape(p, mm, k).permute(1, 0, 2)
        S = (n - 1) * torch.eye(k, dtype=Z.dtype) - torch.einsum("mpk,mpl->mkl", U, Z)
        return U, Z, S


def loo_retrain(obj, theta_hat: torch.Tensor, indices, tol: float = 1e-10,
                max_steps: int = 30, chunk: int | None = None,
                progress: Callable[[int, int, str], None] | None = None,
                hessian_dtype: torch.dtype | None = torch.float32, woodbury: bool | str = "auto",
                log: Callable[[str], None] | None = None,
                factor: torch.Tensor | None = None, precision: str = "auto") -> LooResult:
    """Certified LOO optima of ``obj`` without each of ``indices`` (see module docstring).

    ``factor``: a precomputed ``chord_factor(obj, theta_hat)`` (float32 storage is enough)."""
    solver = LooSolver(obj, theta_hat, hessian_dtype=hessian_dtype, woodbury=woodbury, log=log,
                       factor=factor, precision=precision)
    res = solver.run(indices, tol=tol, max_steps=max_steps, chunk=chunk, progress=progress)
    res.seconds += solver.setup_seconds
    return res
