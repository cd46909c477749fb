"""Figure 2 style panels: actual (x) vs predicted (y) change in test loss.

Each panel: one dot per retrained training point, the ``y = x`` line, equal x and y ranges
(shared by the panels of a group), Pearson R and Spearman rho in the corner. Functions
return matplotlib figures; saving is the caller's business.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

X_LABEL = "Actual diff in test loss"
NOTE_COLOR = "#b03a2e"  # the note (e.g. LiSSA not converged) and the edge of its stats box
Y_LABEL = "Predicted diff in test loss"
COLORS = {"Linear (exact)": "#1f77b4", "Linear (approx)": "#2ca02c", "CNN": "#d62728",
          "CNN (controlled)": "#9467bd", "CNN (certified minimum)": "#d62728",
          "CNN (certified), LiSSA": "#2ca02c", "CNN (certified), Gauss-Newton": "#ff7f0e"}


def shared_limits(panels: Sequence[dict], pad: float = 0.06) -> tuple[float, float]:
    """One (lo, hi) range covering actual and predicted values of all ``panels``."""
    vals = np.concatenate([np.concatenate([np.asarray(p["actual"], float), np.asarray(p["predicted"], float)])
                           for p in panels] or [np.zeros(1)])
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return -1.0, 1.0
    lo, hi = float(vals.min()), float(vals.max())
    span = hi - lo or max(abs(hi), 1e-12)
    return lo - pad * span, hi + pad * span


def scale_exponent(lo: float, hi: float) -> int:
    """Power of ten to factor out of tick labels (0 when the values are of order 0.1 to 100)."""
    m = max(abs(lo), abs(hi))
    if m == 0 or not np.isfinite(m):
        return 0
    e = int(np.floor(np.log10(m)))
    return 0 if -1 <= e <= 2 else e


def _scaled(e: int) -> FuncFormatter:
    return FuncFormatter(lambda v, _pos: f"{v / 10.0 ** e:g}".replace("-", "\u2212"))


def influence_panel(ax, actual, predicted, title: str, stats: dict | None = None,
                    limits: tuple[float, float] | None = None, color: str | None = None) -> None:
    """Draw one panel on ``ax``: scatter, y = x, equal axes, correlations in the corner."""
    actual = np.asarray(actual, float)
    predicted = np.asarray(predicted, float)
    lo, hi = limits or shared_limits([{"actual": actual, "predicted": predicted}])
    ax.plot([lo, hi], [lo, hi], color="0.45", lw=1.0, ls="--", zorder=1, label="y = x")
    ax.axhline(0, color="0.88", lw=0.6, zorder=0)
    ax.axvline(0, color="0.88", lw=0.6, zorder=0)
    ax.scatter(actual, predicted, s=9, alpha=0.65, lw=0, color=color or COLORS.get(title, "#1f77b4"), zorder=2)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal", adjustable="box")
    e = scale_exponent(lo, hi)
    unit = f" ($\\times 10^{{{e}}}$)" if e else ""
    ax.xaxis.set_major_formatter(_scaled(e))
    ax.yaxis.set_major_formatter(_scaled(e))
    ax.tick_params(labelsize=8)
    note = (stats or {}).get("note")  # e.g. LiSSA "not converged: depth 5,000, needs ~11,511"
    if note:  # in red between the title and the axes, where it hides no data
        lines = note.split("; ")
        ax.text(0.5, 1.015, "\n".join(lines), transform=ax.transAxes, ha="center", va="bottom",
                fontsize=8, color=NOTE_COLOR)
        ax.set_title(title, fontsize=11, pad=6 + 11 * len(lines))
    else:
        ax.set_title(title, fontsize=11)
    ax.set_xlabel(X_LABEL + unit, fontsize=9)
    ax.set_ylabel(Y_LABEL + unit, fontsize=9)
    if stats:
        text = (f"Pearson R = {stats['pearson']:.3f}\nSpearman $\\rho$ = {stats['spearman']:.3f}\n"
                f"points: {stats['n_points']}")
        if stats.get("paper_pearson") is not None:  # Figure 2: the paper's value beside ours
            text = text.replace("\n", f"\npaper: R = {stats['paper_pearson']:g}\n", 1)
        x, y, ha, va = stats_corner(actual, predicted, lo, hi, lines=text.count("\n") + 1)
        ax.text(x, y, text, transform=ax.transAxes, va=va, ha=ha, fontsize=8.5,
                bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": NOTE_COLOR if note else "0.8",
                      "alpha": 0.9})


def stats_corner(actual, predicted, lo: float, hi: float, lines: int = 3) -> tuple[float, float, str, str]:
    """Where the correlation box goes: the corner of the panel (top left, then bottom right,
    top right, bottom left) with the fewest points under a box of about 45% x (8% per line +
    4%) of the axes, so the box hides no data (axes fractions and alignment for ``ax.text``)."""
    tall = 0.04 + 0.08 * lines
    span = (hi - lo) or 1.0
    fx = (np.asarray(actual, float) - lo) / span
    fy = (np.asarray(predicted, float) - lo) / span
    corners = [(0.04, 0.96, "left", "top"), (0.96, 0.04, "right", "bottom"),
               (0.96, 0.96, "right", "top"), (0.04, 0.04, "left", "bottom")]

    def hidden(c):
        inx = fx <= 0.5 if c[2] == "left" else fx >= 0.5
        iny = fy >= 1 - tall if c[3] == "top" else fy <= tall
        return int(np.count_nonzero(inx & iny))

    return min(corners, key=hidden)  # first of the least covered (stable)


def influence_figure(groups: Sequence[Sequence[dict]], groups_per_row: int | None = None,
                     suptitle: str | None = None, group_titles: Sequence[str] | None = None,
                     panel_size: float = 3.2, caption: str | None = None):
    """A figure of panel groups; panels in a group share their (equal x/y) axis range.

    Each panel dict: title, actual, predicted, stats (pearson, spearman, n_points; optional
    paper_pearson, shown beside ours, and note). Groups are laid out left to right,
    ``groups_per_row`` per row (default: all in one row), each in its own subfigure titled by
    ``group_titles`` (wrapped to the group's width); ``caption``: a line under the panels.
    """
    groups = [list(g) for g in groups]
    per_row = groups_per_row or len(groups)
    nrows = -(-len(groups) // per_row)
    rows = [groups[r * per_row:(r + 1) * per_row] for r in range(nrows)]
    widths = [sum(len(g) for g in row) for row in rows]
    ncols = max(widths)
    chars = int(12 * panel_size)  # bold 10 pt characters across one panel
    if group_titles:
        sizes = [len(g) for g in groups]
        group_titles = [textwrap.fill(t, width=max(chars, chars * k)) for t, k in zip(group_titles, sizes, strict=False)]
    lines = max((t.count("\n") + 1 for t in group_titles), default=0) if group_titles else 0
    extra = 0.35 * bool(group_titles) + 0.18 * max(0, lines - 1)
    cap_lines = textwrap.wrap(caption, width=int(15 * panel_size * ncols)) if caption else []
    fig = plt.figure(figsize=(panel_size * ncols, (panel_size + extra) * nrows + 0.5 * bool(suptitle)
                              + 0.2 * len(cap_lines)), layout="constrained")
    row_figs = fig.subfigures(nrows, 1, squeeze=False)[:, 0] if nrows > 1 else [fig]
    gi = 0
    for row, rfig in zip(rows, row_figs, strict=True):
        ratios = [len(g) for g in row] + ([ncols - sum(len(g) for g in row)] if sum(len(g) for g in row) < ncols else [])
        gfigs = rfig.subfigures(1, len(ratios), width_ratios=ratios, squeeze=False)[0]
        for group, gfig in zip(row, gfigs, strict=False):
            axes = gfig.subplots(1, len(group), squeeze=False)[0]
            lim = shared_limits(group)
            for ax, p in zip(axes, group, strict=True):
                influence_panel(ax, p["actual"], p["predicted"], p["title"], p.get("stats"), lim, p.get("color"))
            if group_titles:
                gfig.suptitle(group_titles[gi], fontsize=10, fontweight="bold")
            gi += 1
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    if cap_lines:
        fig.supxlabel("\n".join(cap_lines), fontsize=8, color="0.3")
    return fig


def panel_groups(rows: Sequence[dict], panels: Sequence[dict]) -> tuple[list[list[dict]], list[int]]:
    """Group figure rows into plot panels, one group per test point (in ``panels`` order).

    ``rows``: figure rows (test_index, panel, actual, predicted; strings are fine);
    ``panels``: per-panel stats (test_index, panel, pearson, spearman, n_points).
    """
    data: dict[tuple[int, str], tuple[list[float], list[float]]] = {}
    for r in rows:
        a, p = data.setdefault((int(r["test_index"]), r["panel"]), ([], []))
        a.append(float(r["actual"]))
        p.append(float(r["predicted"]))
    groups: dict[int, list[dict]] = {}
    for st in panels:
        t = int(st["test_index"])
        a, p = data.get((t, st["panel"]), ([], []))
        groups.setdefault(t, []).append({"title": st["panel"], "actual": a, "predicted": p, "stats": st})
    return list(groups.values()), list(groups)


def point_title(tp: dict) -> str:
    """``test point 8 (label 6, predicted 6)``; ``tp`` holds test_index, label, predicted_label."""
    ok = "" if tp.get("correct") is None else ("" if tp["correct"] else ", misclassified")
    return f"test point {tp['test_index']} (label {tp.get('label')}, predicted {tp.get('predicted_label')}{ok})"
