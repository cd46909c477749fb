"""Tables: the rows behind the figures, agreement per panel, the cross-experiment summary
and the Figure 2 comparison.

Inputs are plain rows (dicts) as the selection, LOO and figure CSVs and JSONs hold them. No
torch needed (the plotting environment runs this).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from .metrics import agreement

# Koh & Liang (2017), Figure 2: Pearson R between predicted and actual loss differences.
# The certified CNN's panel is compared with the paper's CNN value, which comes from its SGD
# protocol (not a certified minimum).
PAPER_R = {"Linear (exact)": 1.0, "Linear (approx)": 0.99, "CNN": 0.86, "CNN (certified minimum)": 0.86}

# Panel titles of the paper's Figure 2, by method.
PANELS = {"cg": "Linear (exact)", "lissa": "Linear (approx)", "gauss_newton": "Linear, Gauss-Newton"}
# The same panels for the CNN at a certified minimum (cnn.protocol: certified); its second
# estimate (gauss_newton: true) replaces the exact Hessian by the Gauss-Newton matrix.
CERTIFIED_CNN_PANELS = {"cg": "CNN (certified minimum)", "lissa": "CNN (certified), LiSSA",
                        "gauss_newton": "CNN (certified), Gauss-Newton"}


def panel_titles(model: str) -> dict:
    """Panel title by method for an experiment of the pipeline rules."""
    return CERTIFIED_CNN_PANELS if model == "cnn" else PANELS

# The summary holds results only (byte-identical on a rerun); the wall-clock times of the same
# rows go to a separate timings table (TIMING_COLUMNS).
SUMMARY_COLUMNS = [
    "experiment", "model", "test_index", "label", "predicted_label", "correct", "test_loss",
    "panel", "method", "pearson", "spearman", "slope", "n_points", "top_k", "n_train",
    "fit_max_grad", "hessian_min_eigenvalue", "loo_certified", "loo_max_grad", "note",
]
# summary.md's last section: the wall-clock seconds (everything above it is identical on a rerun).
TIMINGS_HEADING = "## Wall-clock seconds"
TIMING_COLUMNS = [
    "experiment", "test_index", "panel", "method",
    "method_seconds", "train_seconds", "loo_seconds", "loo_seconds_per_point",
]


def figure_rows(experiment: str, t: int, selection: Sequence[dict], lissa_pred: dict[int, float],
                loo: Sequence[dict], panels: dict | None = None,
                extra: dict[str, dict[int, float]] | None = None) -> list[dict]:
    """The long table behind one test point's panels.

    ``selection``: rows with rank, train_index, train_label, predicted (CG); ``lissa_pred``: train_index ->
    LiSSA prediction; ``loo``: gathered LOO rows (all test points). One row per (method,
    selected point): experiment, test_index, panel, method, rank, train_index, train_label,
    actual, predicted, grad_maxnorm. ``panels``: title by method (default :data:`PANELS`).
    ``extra``: further estimates, method -> {train_index -> prediction} (e.g. ``gauss_newton``),
    rows after LiSSA's.
    Points whose LOO is not certified (non-convex models: ``converged`` false) have no actual
    change to plot and are left out (:func:`uncertified_note` says how many).
    """
    panels = PANELS if panels is None else panels
    actual = {int(r["train_index"]): r for r in loo if int(r["test_index"]) == int(t)}
    estimates = {"lissa": lissa_pred, **(extra or {})}
    rows = []
    for method in ("cg", *estimates):
        for s in selection:
            i = int(s["train_index"])
            if i not in actual:
                raise KeyError(f"no LOO result for train point {i} at test point {t}")
            if not _true(actual[i].get("converged", True)):
                continue
            pred = float(s["predicted"]) if method == "cg" else float(estimates[method][i])
            rows.append({"experiment": experiment, "test_index": int(t), "panel": panels[method],
                         "method": method, "rank": int(s["rank"]), "train_index": i,
                         "train_label": int(s.get("train_label", -1)),
                         "actual": float(actual[i]["actual"]), "predicted": pred,
                         "grad_maxnorm": float(actual[i]["grad_maxnorm"])})
    return rows


def _true(v) -> bool:
    """A CSV cell or a bool: True / 'True'."""
    return v is True or str(v) == "True"


def uncertified_note(t: int, selection: Sequence[dict], loo: Sequence[dict]) -> str | None:
    """The panel note for selected points whose LOO is not certified (left out of the panel),
    e.g. ``"3 of 100 LOO not certified (2 left the basin), not shown"``; None when all are."""
    sel = {int(s["train_index"]) for s in selection}
    rows = [r for r in loo if int(r["test_index"]) == int(t) and int(r["train_index"]) in sel]
    bad = [r for r in rows if not _true(r.get("converged", True))]
    if not bad:
        return None
    left = sum(_true(r.get("left_basin", False)) for r in bad)
    return (f"{len(bad)} of {len(sel)} LOO not certified" + (f" ({left} left the basin)" if left else "")
            + ", not shown")


# The CNN's panels: the actual change against theta_hat (the paper) and against the control.
CNN_BASELINES = {"CNN": ("actual", "theta_hat"), "CNN (controlled)": ("actual_controlled", "control")}


def cnn_figure_table(experiment: str, selections: Sequence[Sequence[dict]], infos: Sequence[dict],
                     loo: Sequence[dict], loo_info: dict, train: dict, top_k: int,
                     l2: float) -> tuple[list[dict], dict]:
    """The rows and the record behind a CNN experiment's figure.

    ``selections`` and ``infos``: per test point, the selection rows and the influence record
    (``cnn_influence``); ``loo`` / ``loo_info``: the gathered LOO rows and summary; ``train``:
    the training record. Per test point two panels (:data:`CNN_BASELINES`): 'CNN' (actual
    against theta_hat) and 'CNN (controlled)' (against the control run), each with Pearson
    and Spearman; the 'CNN' panel also carries the controlled ones. Returns the figure rows
    (experiment, test_index, panel, method, baseline, rank, train_index, train_label, actual,
    predicted) and the JSON record (protocol, train, panels, timings).
    """
    actual = {(int(r["test_index"]), int(r["train_index"])): r for r in loo}
    rows, panels = [], []
    for sel, info in zip(selections, infos, strict=True):
        t = int(info["test_index"])
        for panel, (column, baseline) in CNN_BASELINES.items():
            prs = [(float(actual[(t, int(s["train_index"]))][column]), float(s["predicted"])) for s in sel]
            for s, (a, p) in zip(sel, prs, strict=True):
                rows.append({"experiment": experiment, "test_index": t, "panel": panel, "method": "cg",
                             "baseline": baseline, "rank": int(s["rank"]),
                             "train_index": int(s["train_index"]), "train_label": int(s["train_label"]),
                             "actual": a, "predicted": p})
            stats = agreement([p for _, p in prs], [a for a, _ in prs])
            panels.append({"panel": panel, "method": "cg", "baseline": baseline, "test_index": t,
                           "label": info["label"], "predicted_label": info["predicted_label"],
                           "correct": info["correct"], "test_loss": info["test_loss"], **stats,
                           "seconds": info["seconds"], "cg_converged": info["cg_converged"],
                           "cg_iterations": info["cg_iterations"],
                           "min_curvature": info["min_curvature"],
                           "control_drift": loo_info["control_drift"][str(t)]})
        paper, ctl = panels[-2], panels[-1]
        paper.update(pearson_controlled=ctl["pearson"], spearman_controlled=ctl["spearman"])
    s = train["settings"]
    record = {
        "experiment": experiment,
        "model": "cnn",
        "n_train": train["n_train"],
        "top_k": top_k,
        "l2": l2,
        "test_indices": [int(i["test_index"]) for i in infos],
        "protocol": {"train_steps": train["steps"], "train_lr": s["train"]["lr"],
                     "batch_size": s["train"]["batch_size"], "damping": infos[0]["damping"],
                     "hvp_batch_size": infos[0]["hvp_batch_size"], "loo_steps": loo_info["steps"],
                     "loo_lr": loo_info["lr"], "device": train["device"]},
        "train": {k: train[k] for k in ("train_accuracy", "test_accuracy", "train_objective", "steps",
                                        "seconds")},
        "panels": panels,
        "timings": {
            "train_seconds": train["seconds"],
            "train_seconds_per_step": train["seconds_per_step"],
            "influence_seconds": {str(i["test_index"]): i["seconds"] for i in infos},
            "loo_seconds": loo_info["seconds"],
            "loo_seconds_per_point": loo_info["seconds_per_point"],
            "control_seconds": loo_info["control_seconds"],
            "loo_points": loo_info["points"],
            "loo_shards": loo_info["shards"],
        },
    }
    return rows, record


def panel_stats(rows: Sequence[dict]) -> list[dict]:
    """Agreement (Pearson, Spearman, slope of predicted on actual, n) per (test_index, panel).

    ``rows`` are figure rows (test_index, panel, method, actual, predicted). Order: first
    appearance.
    """
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((int(r["test_index"]), r["panel"], r["method"]), []).append(r)
    out = []
    for (t, panel, method), rs in groups.items():
        a = np.array([float(r["actual"]) for r in rs])
        p = np.array([float(r["predicted"]) for r in rs])
        stats = agreement(p, a) if len(rs) >= 2 else {"pearson": math.nan, "spearman": math.nan,
                                                      "slope": math.nan, "n_points": len(rs)}
        out.append({"test_index": t, "panel": panel, "method": method, **stats})
    return out


def certificate_record(train: dict, loo: dict) -> dict:
    """What certifies an experiment's numbers, from its train.json and loo.json: the fit's
    max|grad| (and, for non-convex models, the Hessian's extreme eigenvalues off the null
    directions), how many LOO optima are certified and the largest certified max|grad|."""
    points = int(loo["points"])
    bad = int(loo.get("not_certified", 0))
    worst = loo.get("max_grad_maxnorm_certified", loo.get("max_grad_maxnorm"))
    return {"fit_max_grad": train.get("grad_maxnorm"),
            "hessian_min_eigenvalue": train.get("hessian_min_eigenvalue"),
            "hessian_max_eigenvalue": train.get("hessian_max_eigenvalue"),
            "loo_points": points, "loo_certified_points": points - bad,
            "loo_certified": f"{points - bad}/{points}", "loo_max_grad": worst}


def summary_rows(figure_records: Iterable[dict]) -> list[dict]:
    """Flatten experiment figure JSONs (``panels`` list + experiment fields) into summary rows
    (the fields of ``SUMMARY_COLUMNS`` and ``TIMING_COLUMNS``)."""
    rows = []
    for rec in figure_records:
        timings = rec.get("timings", {})
        cert = rec.get("certificate", {})
        for p in rec["panels"]:
            rows.append({
                "experiment": rec["experiment"],
                "model": rec.get("model"),
                "test_index": p["test_index"],
                "label": p.get("label"),
                "predicted_label": p.get("predicted_label"),
                "correct": p.get("correct"),
                "test_loss": p.get("test_loss"),
                "panel": p["panel"],
                "method": p["method"],
                "pearson": p["pearson"],
                "spearman": p["spearman"],
                "slope": p["slope"],
                "n_points": p["n_points"],
                "top_k": rec.get("top_k"),
                "n_train": rec.get("n_train"),
                "fit_max_grad": cert.get("fit_max_grad"),
                "hessian_min_eigenvalue": cert.get("hessian_min_eigenvalue"),
                "loo_certified": cert.get("loo_certified"),
                "loo_max_grad": cert.get("loo_max_grad"),
                "note": p.get("note"),
                "method_seconds": p.get("seconds"),
                "train_seconds": timings.get("train_seconds"),
                "loo_seconds": timings.get("loo_seconds"),
                "loo_seconds_per_point": timings.get("loo_seconds_per_point"),
            })
    return rows


# Per-column float formats of the Markdown tables (correlations near 1 need the digits).
FORMATS = {"pearson": ".5f", "spearman": ".5f", "slope": ".4f", "paper_pearson": "",
           "fit_max_grad": ".2g", "hessian_min_eigenvalue": ".3g", "loo_max_grad": ".2g"}


def _fmt(v, floatfmt: str = ".4g") -> str:
    if v is None:
        return ""
    if isinstance(v, bool) or isinstance(v, np.bool_):
        return "yes" if v else "no"
    if isinstance(v, float | np.floating):
        return "nan" if math.isnan(v) else format(float(v), floatfmt)
    return str(v).replace("|", "\\|")


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None,
                   headers: Sequence[str] | None = None, floatfmt: str = ".4g",
                   formats: dict[str, str] | None = None) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency); floats formatted by column
    (``formats``, default ``FORMATS``) or ``floatfmt``."""
    columns = list(columns or (rows[0].keys() if rows else []))
    headers = list(headers or columns)
    formats = FORMATS if formats is None else formats
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c), formats.get(c, floatfmt)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def paper_rows(panels: Sequence[dict]) -> list[dict]:
    """Rows of the Figure 2 table: our Pearson R next to the paper's, per panel.

    Each panel dict: panel, pearson, spearman, slope, n_points, top_k, n_train, test_index,
    experiment, ``note`` (e.g. LiSSA not converged; optional) and ``seconds`` (a dict step ->
    seconds).
    """
    out = []
    for p in panels:
        secs = p.get("seconds") or {}
        out.append({
            "panel": p["panel"],
            "pearson": p["pearson"],
            "paper_pearson": PAPER_R.get(p["panel"]),
            "spearman": p["spearman"],
            "slope": p["slope"],
            "n_train": p.get("n_train"),
            "top_k": p.get("top_k"),
            "test_index": p.get("test_index"),
            "experiment": p.get("experiment"),
            "note": p.get("note"),
            "seconds": ", ".join(f"{k} {v:.3g}" for k, v in secs.items() if v is not None),
        })
    return out


# The Figure 2 table (figure2.md) holds results only; a row's ``seconds`` stays in figure2.json.
PAPER_HEADERS = ["Panel", "Pearson R (ours)", "Pearson R (paper)", "Spearman", "Slope", "n (train)",
                 "k (retrained)", "Test index", "Experiment", "Note"]
PAPER_COLUMNS = ["panel", "pearson", "paper_pearson", "spearman", "slope", "n_train", "top_k",
                 "test_index", "experiment", "note"]
