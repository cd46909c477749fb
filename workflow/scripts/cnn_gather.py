"""DRAFT rule cnn_gather: predicted vs actual (paper and controlled baselines) per test point."""

import torch
import wfio
from infcore import cnn
from infcore.metrics import pearson, spearman
from infcore.selection import top_k

log = wfio.setup(snakemake)
s = snakemake.params.settings
shards = [wfio.load_torch(p) for p in snakemake.input.shards]
shards = [sh for sh in shards if sh["removed"].numel()]
removed = torch.cat([sh["removed"] for sh in shards])
losses = torch.cat([sh["eval_losses"] for sh in shards])  # (m, n_tests)
ctrl = wfio.load_torch(snakemake.input.control)
pos = {int(i): k for k, i in enumerate(removed.tolist())}
rows, panels = [], []
for j, (pp, ip) in enumerate(zip(snakemake.input.pred, snakemake.input.info, strict=True)):
    info = wfio.load_json(ip)
    pred = wfio.load_torch(pp)["pred"]
    idx = top_k(pred, s["top_k"]).tolist()  # the select CSV's order: |pred| descending
    k = torch.tensor([pos[i] for i in idx])
    diffs = cnn.loo_differences(losses[k, j].double(), torch.tensor(idx),
                                float(shards[0]["base_losses"][j]), float(ctrl["eval_losses"][0, j]))
    p = pred[idx].double()
    for r, i in enumerate(idx):
        rows.append({"test_index": info["test_index"], "train_index": i, "predicted": float(p[r]),
                     "actual": float(diffs["actual_paper"][r]),
                     "actual_controlled": float(diffs["actual_controlled"][r])})
    panels.append({
        "panel": "CNN", "test_index": info["test_index"], "n_points": len(idx),
        "pearson": pearson(p, diffs["actual_paper"]), "spearman": spearman(p, diffs["actual_paper"]),
        "pearson_controlled": pearson(p, diffs["actual_controlled"]),
        "spearman_controlled": spearman(p, diffs["actual_controlled"]),
        "control_drift": float(ctrl["eval_losses"][0, j] - shards[0]["base_losses"][j]),
        "cg_converged": info["cg_converged"], "cg_iterations": info["cg_iterations"],
        "min_curvature": info["min_curvature"], "seconds": info["seconds"],
    })
    log.info("test %d: Pearson %.3f (paper baseline), %.3f (controlled)", info["test_index"],
             panels[-1]["pearson"], panels[-1]["pearson_controlled"])
wfio.save_csv(rows, snakemake.output.csv)
wfio.save_json({"experiment": snakemake.wildcards.experiment, "panels": panels,
                "train": wfio.load_json(snakemake.input.train),
                "loo_seconds": sum(sh["seconds"] for sh in shards) + ctrl["seconds"]},
               snakemake.output.json)
