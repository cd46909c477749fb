"""Was a LiSSA run in its contraction regime, and did it converge within its depth?

LiSSA (``infcore.solvers.lissa``) iterates ``x_t = b + (I - A_t / s) x_{t-1}`` with
``A_t = H_t + damping I`` the Hessian of a sampled minibatch and ``s`` the scale. In
expectation the error of ``x_t / s`` as an estimate of ``A^{-1} b`` shrinks per step by the
spectral radius ``rho = max(|1 - lambda_min / s|, |1 - lambda_max / s|)`` of ``I - A / s``, so
after ``depth`` steps a fraction ``rho^depth`` of it is left in the slowest eigendirection.

* **Contraction regime.** ``"per_step"``: ``s`` is at least the largest single-point Hessian
  eigenvalue (a bound on every minibatch Hessian's), so no sampled step expands the iterate
  (the condition LiSSA's analysis assumes; for batch size 1 it is also necessary).
  ``"expected_only"``: ``lambda_max / 2 < s`` but below the single-point bound (or that bound
  is unknown): the mean recursion contracts, single steps may expand. ``"divergent"``:
  ``s <= lambda_max / 2``, the mean recursion itself diverges.
* **Smallest eigenvalue.** For a convex data loss (logistic regression) ``H >= l2 I``, so
  ``l2 + damping`` is a lower bound on ``lambda_min(A)``. It is tight where the data Hessian
  is nearly singular along directions the gradients reach (on MNIST the norm trace still grows
  at the depth the bound calls too short: 1.7% at L2 0.01, 6.8% at L2 0.001) and conservative
  elsewhere (softmax's exact null directions, eigenvalue exactly ``l2``, are orthogonal to every
  gradient), so ``depth_needed``, which makes ``rho^depth <= DEPTH_TOL``, is an upper bound.
* **The run itself.** ``tail_growth``: relative change of the mean iterate norm from the
  second-last to the last tenth of the norm trace; a converged run stays flat up to noise.

:func:`lissa_diagnostics` returns all of it as a JSON-able dict with a verdict (``converged``,
``status``, ``warnings``); :func:`panel_note` is the short mark for tables and figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


class LissaConvergenceWarning(UserWarning):
    """A LiSSA run outside its contraction regime or truncated before convergence."""


DEPTH_TOL = 1e-2  # slowest-mode error left after the depth: rho^depth <= DEPTH_TOL
TRACE_TOL = 2e-2  # |tail_growth| above this: the iterate norm still moves (converged runs: noise
#                   of 0.5-0.9% with 10 repeats at batch size 1 on MNIST; truncated ones: 1.7-6.8%)
TAIL_FRACTION = 0.1  # the tail of the norm trace that tail_growth compares


def contraction_regime(scale: float, largest_eigenvalue: float,
                       largest_example_eigenvalue: float | None = None) -> str:
    """``"per_step"``, ``"expected_only"`` or ``"divergent"`` (module docstring). Eigenvalues
    are of the Hessian plus damping."""
    if scale <= largest_eigenvalue / 2:
        return "divergent"
    if largest_example_eigenvalue is not None and scale >= largest_example_eigenvalue:
        return "per_step"
    return "expected_only"


def contraction_factor(scale: float, lambda_min: float, lambda_max: float) -> float:
    """Spectral radius of ``I - A / s`` for ``spec(A)`` in ``[lambda_min, lambda_max]``."""
    return max(abs(1.0 - lambda_min / scale), abs(1.0 - lambda_max / scale))


def depth_needed(rho: float, tol: float = DEPTH_TOL) -> int | None:
    """Smallest depth with ``rho^depth <= tol``; None when ``rho >= 1`` (no depth suffices)."""
    if rho >= 1.0:
        return None
    if rho <= 0.0:
        return 1
    return max(1, math.ceil(math.log(tol) / math.log(rho)))


def tail_growth(norm_trace: Sequence[Sequence[float]], fraction: float = TAIL_FRACTION) -> float:
    """``(mean of the last tenth - mean of the tenth before) / mean of the last tenth`` of the
    trace's norms (``(step, norm)`` pairs); 0.0 when the trace is too short to tell."""
    norms = [float(v) for _, v in norm_trace]
    k = max(1, int(len(norms) * fraction))
    if len(norms) < 2 * k:
        return 0.0
    last, before = sum(norms[-k:]) / k, sum(norms[-2 * k:-k]) / k
    return (last - before) / last if last else 0.0


def _int(n: int | None) -> str:
    return "none suffices" if n is None else f"{n:,}"


def lissa_diagnostics(*, scale: float, depth: int, batch_size: int, l2: float, damping: float,
                      largest_eigenvalue: float, largest_example_eigenvalue: float | None,
                      norm_trace: Sequence[Sequence[float]], convex: bool = True,
                      depth_tol: float = DEPTH_TOL, trace_tol: float = TRACE_TOL) -> dict:
    """Contraction regime, the depth the smallest-eigenvalue bound needs and the norm-trace
    check of one LiSSA run, with a verdict.

    Args:
        scale, depth, batch_size, damping: the run's settings.
        l2: the objective's L2 coefficient (``l2 + damping`` bounds ``lambda_min`` from below).
        largest_eigenvalue: of the full Hessian plus damping (power iteration).
        largest_example_eigenvalue: largest single-point Hessian eigenvalue plus damping (None
            when unknown).
        norm_trace: ``(step, mean iterate norm / scale)`` pairs of the run.
        convex: whether the data loss is convex. If not (the certified CNN), ``l2 + damping``
            bounds nothing, so there is no ``depth_needed`` and only the norm trace decides.

    Returns a dict: ``lambda_min_bound``, ``contraction_regime``, ``contraction_factor``
    (``rho``), ``remaining_slowest`` (``rho^depth``), ``depth_needed``, ``depth_tol``,
    ``tail_growth``, ``trace_tol``, ``converged`` (depth >= depth_needed and the trace flat),
    ``status`` ("converged" or "not converged: depth D, needs ~N") and ``warnings``.
    """
    lam_min = float(l2) + float(damping) if convex else None
    regime = contraction_regime(scale, largest_eigenvalue, largest_example_eigenvalue)
    rho = contraction_factor(scale, lam_min, largest_eigenvalue) if convex else None
    need = depth_needed(rho, depth_tol) if convex else None
    growth = tail_growth(norm_trace)
    deep_enough = (need is not None and depth >= need) if convex else True
    flat = abs(growth) <= trace_tol
    warnings = []
    if regime == "divergent":
        warnings.append(f"scale {scale:g} is at most half the largest eigenvalue {largest_eigenvalue:.4g} "
                        "of H + damping I: the recursion diverges even in expectation; raise the scale")
    elif regime == "expected_only":
        if largest_example_eigenvalue is None:
            warnings.append(f"scale {scale:g}: the largest single-point eigenvalue is unknown, so "
                            "whether single steps contract is not checked")
        else:
            warnings.append(
                f"scale {scale:g} is below the largest single-point eigenvalue "
                f"{largest_example_eigenvalue:.4g}: steps that sample such a point expand the iterate "
                + ("(batch size 1: the contraction condition is violated)" if batch_size == 1 else
                   f"(batch size {batch_size}: contraction per step not guaranteed)"))
    if not convex:
        warnings.append("non-convex objective: no lower bound on lambda_min, so the depth needed "
                        "is unknown; only the norm trace is checked")
    if not deep_enough:
        warnings.append(
            f"depth {depth:,} is below the ~{_int(need)} steps that (1 - lambda_min/scale)^depth <= "
            f"{depth_tol:g} needs (lambda_min >= l2 + damping = {lam_min:.4g}, scale {scale:g}: "
            f"{rho:.6g}^{depth:,} = {rho ** depth:.3g} of the slowest mode is left)")
    if not flat:
        warnings.append(f"the iterate norm still changes {growth:+.2%} from the second-last to the "
                        "last tenth of the steps")
    converged = deep_enough and flat
    if converged:
        status = "converged"
    elif not deep_enough:
        status = f"not converged: depth {depth:,}, needs ~{_int(need)}"
    else:
        status = f"not converged: norm still changing {growth:+.1%} at depth {depth:,}"
    return {
        "lambda_min_bound": lam_min,
        "lambda_min_source": "l2 + damping (H >= l2 I for a convex data loss)" if convex else
        "none (non-convex objective)",
        "contraction_regime": regime,
        "largest_example_eigenvalue": largest_example_eigenvalue,
        "contraction_factor": rho,
        "remaining_slowest": None if rho is None else rho ** depth,
        "depth_needed": need,
        "depth_tol": depth_tol,
        "tail_growth": growth,
        "trace_tol": trace_tol,
        "converged": converged,
        "status": status,
        "warnings": warnings,
    }


def panel_note(diag: dict) -> str | None:
    """The mark of a LiSSA panel in tables and figures: its ``status`` unless converged, and
    the regime when single steps are known to expand (or the mean diverges); None otherwise."""
    notes = [] if diag.get("converged") else [diag["status"]]
    regime = diag.get("contraction_regime")
    if regime == "expected_only" and diag.get("largest_example_eigenvalue") is not None:
        notes.append("scale below single-point eigenvalue")
    elif regime == "divergent":
        notes.append("scale below lambda_max / 2")
    return "; ".join(notes) or None
