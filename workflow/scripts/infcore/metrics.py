"""Agreement between predicted and actual loss changes."""

from __future__ import annotations

import numpy as np


def _arr(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64).reshape(-1)


def pearson(a, b) -> float:
    """Pearson correlation coefficient."""
    a, b = _arr(a), _arr(b)
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"need two equal-length series of >= 2 values, got {a.size} and {b.size}")
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def _rank(a: np.ndarray) -> np.ndarray:
    """Ranks with ties given their average rank."""
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(a.size, dtype=np.float64)
    sa = a[order]
    i = 0
    while i < a.size:
        j = i
        while j + 1 < a.size and sa[j + 1] == sa[i]:
            j += 1
        ranks[order[i:j + 1]] = 0.5 * (i + j)
        i = j + 1
    return ranks


def spearman(a, b) -> float:
    """Spearman rank correlation (Pearson of average ranks)."""
    a, b = _arr(a), _arr(b)
    return pearson(_rank(a), _rank(b))


def slope(pred, actual) -> float:
    """Least-squares slope of ``pred`` regressed on ``actual`` (1 means the scale matches)."""
    p, a = _arr(pred), _arr(actual)
    a0 = a - a.mean()
    return float((a0 * (p - p.mean())).sum() / (a0 * a0).sum())


def agreement(pred, actual) -> dict:
    """Pearson, Spearman, slope and count in one dict."""
    return {"pearson": pearson(pred, actual), "spearman": spearman(pred, actual),
            "slope": slope(pred, actual), "n_points": int(_arr(pred).size)}
