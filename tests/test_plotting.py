"""infcore.plotting and infcore.tables: Figure 2 panels and the summary tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
from infcore.metrics import pearson, slope, spearman
from infcore.plotting import (
    NOTE_COLOR,
    influence_figure,
    panel_groups,
    point_title,
    scale_exponent,
    shared_limits,
)
from infcore.tables import (
    PAPER_R,
    SUMMARY_COLUMNS,
    TIMING_COLUMNS,
    markdown_table,
    panel_stats,
    paper_rows,
    summary_rows,
)


def _rows(t=8, n=40, seed=0):
    rng = np.random.default_rng(seed)
    actual = rng.normal(0, 1e-3, n)
    rows = []
    for method, panel, noise in (("cg", "Linear (exact)", 1e-5), ("lissa", "Linear (approx)", 3e-4)):
        pred = actual + rng.normal(0, noise, n)
        rows += [{"test_index": t, "panel": panel, "method": method, "actual": str(a), "predicted": str(p)}
                 for a, p in zip(actual, pred, strict=True)]
    return rows


def test_panel_stats_match_metrics():
    rows = _rows()
    stats = panel_stats(rows)
    assert [(s["panel"], s["method"]) for s in stats] == [("Linear (exact)", "cg"), ("Linear (approx)", "lissa")]
    a = [float(r["actual"]) for r in rows if r["method"] == "lissa"]
    p = [float(r["predicted"]) for r in rows if r["method"] == "lissa"]
    s = stats[1]
    assert s["pearson"] == pytest.approx(pearson(p, a)) and s["spearman"] == pytest.approx(spearman(p, a))
    assert s["slope"] == pytest.approx(slope(p, a)) and s["n_points"] == 40
    assert stats[0]["pearson"] > 0.999 > s["pearson"]


def test_limits_cover_all_panels_and_scale():
    lo, hi = shared_limits([{"actual": [-1e-3, 2e-3], "predicted": [0.0]}, {"actual": [0], "predicted": [5e-3]}])
    assert lo < -1e-3 and hi > 5e-3
    assert scale_exponent(lo, hi) == -3 and scale_exponent(-0.5, 20) == 0 and scale_exponent(0, 0) == 0


def test_influence_figure_panels(tmp_path):
    rows = _rows(8) + _rows(33, seed=1)
    stats = panel_stats(rows)
    groups, tests = panel_groups(rows, stats)
    assert tests == [8, 33] and [len(g) for g in groups] == [2, 2]
    fig = influence_figure(groups, groups_per_row=2, suptitle="title",
                           group_titles=[point_title({"test_index": t, "label": 1, "predicted_label": 2,
                                                           "correct": False}) for t in tests])
    axes = [ax for ax in fig.get_axes() if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["Linear (exact)", "Linear (approx)"] * 2
    for ax in axes:
        assert ax.get_xlim() == ax.get_ylim()  # equal axes
        assert "Actual diff in test loss" in ax.get_xlabel() and "Predicted" in ax.get_ylabel()
        texts = [t.get_text() for t in ax.texts]
        assert any("Pearson R = " in t and "Spearman" in t for t in texts)
        line = ax.get_lines()[0]  # y = x
        assert np.allclose(line.get_xdata(), line.get_ydata())
    assert axes[0].get_xlim() == axes[1].get_xlim()  # shared within a test point
    path = tmp_path / "f.png"
    fig.savefig(path)
    assert path.stat().st_size > 10_000
    assert "misclassified" in point_title({"test_index": 3, "label": 1, "predicted_label": 2, "correct": False})


def test_panel_note_is_drawn_above_the_axes():
    """A LiSSA panel that did not converge says so in red between its title and the axes."""
    stats = panel_stats(_rows())
    stats[1]["note"] = "not converged: depth 5,000, needs ~11,511; scale below single-point eigenvalue"
    groups, _ = panel_groups(_rows(), stats)
    fig = influence_figure(groups)
    axes = [ax for ax in fig.get_axes() if ax.get_title()]
    notes = [[t for t in ax.texts if "not converged" in t.get_text()] for ax in axes]
    assert [len(n) for n in notes] == [0, 1]  # only the LiSSA panel
    note = notes[1][0]
    assert note.get_text() == "not converged: depth 5,000, needs ~11,511\nscale below single-point eigenvalue"
    assert note.get_position()[1] > 1.0 and note.get_color() == NOTE_COLOR  # above the axes, in red


def test_summary_and_markdown():
    stats = panel_stats(_rows())
    rec = {"experiment": "e", "model": "logreg", "n_train": 100, "top_k": 40,
           "timings": {"train_seconds": 1.5, "loo_seconds": 3.0, "loo_seconds_per_point": 0.075},
           "panels": [{**s, "seconds": 0.5, "label": 1, "predicted_label": 1, "correct": True, "test_loss": 0.1}
                      for s in stats]}
    rows = summary_rows([rec])
    assert len(rows) == 2 and set(rows[0]) == set(SUMMARY_COLUMNS) | set(TIMING_COLUMNS)
    assert not any(c.endswith("seconds") for c in SUMMARY_COLUMNS)  # results only
    assert rows[0]["train_seconds"] == 1.5 and rows[1]["method"] == "lissa"
    md = markdown_table(rows, SUMMARY_COLUMNS)
    lines = md.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("| experiment |") and lines[1].startswith("| --- |")
    assert "| yes |" in lines[2]
    assert "nan" in markdown_table([{"a": math.nan}])
    assert "| 0.99998 | 1.0 |" in markdown_table([{"pearson": 0.999984, "paper_pearson": 1.0}])


def test_paper_rows_pair_ours_with_the_paper():
    panels = [{"panel": "Linear (exact)", "pearson": 0.999, "spearman": 0.99, "slope": 1.0, "n_train": 55000,
               "top_k": 500, "test_index": 8, "experiment": "mnist_logreg",
               "seconds": {"train": 10.0, "cg": 2.0, "LOO per point": None}}]
    row = paper_rows(panels)[0]
    assert row["paper_pearson"] == PAPER_R["Linear (exact)"] == 1.0
    assert row["seconds"] == "train 10, cg 2"
    # the certified CNN's panel is compared with the paper's CNN value (its SGD protocol)
    assert PAPER_R == {"Linear (exact)": 1.0, "Linear (approx)": 0.99, "CNN": 0.86,
                       "CNN (certified minimum)": 0.86}
