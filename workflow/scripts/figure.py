"""Rule figure: one experiment's panels for all its test points, with the combined CSV and JSON."""

import wfio
from infcore.plotting import influence_figure, panel_groups, point_title
from infcore.tables import certificate_record

log = wfio.setup(snakemake)
exp = snakemake.wildcards.experiment
records = [wfio.load_json(p) for p in snakemake.input.json]
rows = [r for p in snakemake.input.csv for r in wfio.load_csv(p)]
train = wfio.load_json(snakemake.input.train)
loo = wfio.load_json(snakemake.input.loo_info)
panels = [p for rec in records for p in rec["panels"]]
record = {
    "experiment": exp,
    "model": train["settings"].get("model"),
    "n_train": train["n_train"],
    "top_k": snakemake.params.top_k,
    "l2": train["l2"],
    "test_indices": [rec["test_index"] for rec in records],
    "train": {k: train[k] for k in ("train_accuracy", "test_accuracy", "test_loss", "grad_maxnorm", "iterations",
                                     "seconds")},
    "panels": panels,
    "certificate": certificate_record(train, loo),
    "timings": {
        "train_seconds": train["seconds"],
        "loo_seconds": loo["seconds"],
        "loo_seconds_per_point": loo["seconds_per_point"],
        "loo_points": loo["points"],
        "loo_shards": loo["shards"],
        "cg_seconds": {str(rec["test_index"]): rec["timings"]["cg_seconds"] for rec in records},
        "lissa_seconds": {str(rec["test_index"]): rec["timings"]["lissa_seconds"] for rec in records},
    },
}
groups, tests = panel_groups(rows, panels)
many = len(groups) > 1
title = (f"{exp}: top {record['top_k']} of {record['n_train']} training points by |CG prediction| per test point"
         if many else f"{exp}: {point_title(records[0]['test_point'])}\n"
                      f"top {record['top_k']} of {record['n_train']} training points by |CG prediction|")
fig = influence_figure(groups, groups_per_row=2 if many else None, suptitle=title,
                       group_titles=[point_title(rec["test_point"]) for rec in records] if many else None)
wfio.save_figure(fig, snakemake.output.png, snakemake.output.pdf)
wfio.save_csv(rows, snakemake.output.csv)
wfio.save_json(record, snakemake.output.json)
log.info("%s: %d test points, %d panels", exp, len(records), len(panels))
