"""Rule cnn_figure: the 'CNN' panel of Figure 2 for one experiment, with its CSV and JSON.

Per test point two panels on shared axes: 'CNN' (actual against theta_hat, the paper's
baseline) and 'CNN (controlled)' (actual against the control run: the same continued
training with nothing removed). Pearson/Spearman of both go to the JSON.
"""

import wfio
from infcore.metrics import agreement
from infcore.plotting import influence_figure, panel_groups, point_title

log = wfio.setup(snakemake)
exp = snakemake.wildcards.experiment
train = wfio.load_json(snakemake.input.train)
loo_info = wfio.load_json(snakemake.input.loo_info)
actual = {(int(r["test_index"]), int(r["train_index"])): r for r in wfio.load_csv(snakemake.input.loo)}
BASELINES = {"CNN": ("actual", "theta_hat"), "CNN (controlled)": ("actual_controlled", "control")}
rows, panels, infos = [], [], []
for sel_path, info_path in zip(snakemake.input.selections, snakemake.input.influence, strict=True):
    info = wfio.load_json(info_path)
    infos.append(info)
    t = int(info["test_index"])
    sel = wfio.load_csv(sel_path)
    for panel, (column, baseline) in BASELINES.items():
        prs = [(float(actual[(t, int(s["train_index"]))][column]), float(s["predicted"])) for s in sel]
        for s, (a, p) in zip(sel, prs, strict=True):
            rows.append({"experiment": exp, "test_index": t, "panel": panel, "method": "cg",
                         "baseline": baseline, "rank": int(s["rank"]), "train_index": int(s["train_index"]),
                         "train_label": int(s["train_label"]), "actual": a, "predicted": p})
        stats = agreement([p for _, p in prs], [a for a, _ in prs])
        panels.append({"panel": panel, "method": "cg", "baseline": baseline, "test_index": t,
                       "label": info["label"], "predicted_label": info["predicted_label"],
                       "correct": info["correct"], "test_loss": info["test_loss"], **stats,
                       "seconds": info["seconds"], "cg_converged": info["cg_converged"],
                       "cg_iterations": info["cg_iterations"], "min_curvature": info["min_curvature"],
                       "control_drift": loo_info["control_drift"][str(t)]})
    paper, ctl = panels[-2], panels[-1]
    paper.update(pearson_controlled=ctl["pearson"], spearman_controlled=ctl["spearman"])
    log.info("test %d: Pearson %.3f / Spearman %.3f (vs theta_hat), %.3f / %.3f (vs control); drift %.4g",
             t, paper["pearson"], paper["spearman"], ctl["pearson"], ctl["spearman"], paper["control_drift"])
s = train["settings"]
record = {
    "experiment": exp,
    "model": "cnn",
    "n_train": train["n_train"],
    "top_k": snakemake.params.top_k,
    "l2": snakemake.params.l2,
    "test_indices": [int(i["test_index"]) for i in infos],
    "protocol": {"train_steps": train["steps"], "train_lr": s["train"]["lr"], "batch_size": s["train"]["batch_size"],
                 "damping": infos[0]["damping"], "hvp_batch_size": infos[0]["hvp_batch_size"],
                 "loo_steps": loo_info["steps"], "loo_lr": loo_info["lr"], "device": train["device"]},
    "train": {k: train[k] for k in ("train_accuracy", "test_accuracy", "train_objective", "steps", "seconds")},
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
groups, _ = panel_groups(rows, panels)
p = record["protocol"]
sub = (f"top {record['top_k']} of {record['n_train']} by |prediction|; train {p['train_steps']} steps, "
       f"LOO {p['loo_steps']} continued steps, damping {p['damping']:g}")
titles = [point_title(i) for i in infos]
fig = influence_figure(groups, groups_per_row=1 if len(groups) > 1 else None, group_titles=titles,
                       suptitle=f"{exp} (CNN): {sub}\nleft: actual vs theta_hat (paper); right: vs control run")
wfio.save_figure(fig, snakemake.output.png, snakemake.output.pdf)
wfio.save_csv(rows, snakemake.output.csv)
wfio.save_json(record, snakemake.output.json)
log.info("%s: %d test points", exp, len(infos))
