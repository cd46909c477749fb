"""Rule figure_point: Figure 2 panels for one test point, the CSV behind them and their stats."""

import wfio
from infcore.plotting import influence_figure, panel_groups, point_title
from infcore.tables import figure_rows, panel_stats, panel_titles, uncertified_note

log = wfio.setup(snakemake)
exp, t = snakemake.wildcards.experiment, int(snakemake.wildcards.test)
cg = wfio.load_json(snakemake.input.cg_info)
lissa = wfio.load_json(snakemake.input.lissa_info)
loo = wfio.load_json(snakemake.input.loo_info)
lissa_pred = {int(r["train_index"]): float(r["predicted"]) for r in wfio.load_csv(snakemake.input.lissa)}
selection, loo_rows = wfio.load_csv(snakemake.input.selection), wfio.load_csv(snakemake.input.loo)
gn = wfio.load_json(snakemake.input.gn_info) if "gn_info" in snakemake.input.keys() else None
extra = ({"gauss_newton": {int(r["train_index"]): float(r["predicted"]) for r in wfio.load_csv(snakemake.input.gn)}}
         if gn else None)
rows = figure_rows(exp, t, selection, lissa_pred, loo_rows, panels=panel_titles(snakemake.params.model), extra=extra)
tp = {k: cg[k] for k in ("test_index", "label", "predicted_label", "correct", "p_label", "test_loss")}
seconds = {"cg": cg["seconds"], "lissa": lissa["seconds"], "gauss_newton": gn["seconds"] if gn else None}
loo_note = uncertified_note(t, selection, loo_rows)  # non-convex LOO: points not certified
notes = {"cg": loo_note, "lissa": "; ".join(n for n in (lissa.get("note"), loo_note) if n) or None,
         "gauss_newton": loo_note}
panels = [{**s, "seconds": seconds[s["method"]], "note": notes[s["method"]], **tp} for s in panel_stats(rows)]
for p in panels:
    log.info("%s: Pearson %.4f, Spearman %.4f, slope %.4f, n %d", p["panel"], p["pearson"], p["spearman"],
             p["slope"], p["n_points"])
record = {
    "experiment": exp,
    "test_index": t,
    "test_point": tp,
    "top_k": snakemake.params.top_k,
    "n_train": cg["n_train"],
    "panels": panels,
    "timings": {"cg_seconds": cg["seconds"], "cg_iterations": cg["iterations"], "lissa_seconds": lissa["seconds"],
                "loo_seconds_per_point": loo["seconds_per_point"]},
}
if gn:  # the second estimate's agreement with CG (the exact Hessian), over all points and the selected
    record["gauss_newton_vs_cg"] = {"all": gn["vs_cg_all"], "selected": gn["vs_cg_selected"]}
groups, _ = panel_groups(rows, panels)
title = f"{exp}: {point_title(tp)}\ntop {record['top_k']} of {record['n_train']} training points by |CG prediction|"
fig = influence_figure(groups, suptitle=title)
wfio.save_figure(fig, snakemake.output.png, snakemake.output.pdf)
wfio.save_csv(rows, snakemake.output.csv)
wfio.save_json(record, snakemake.output.json)
