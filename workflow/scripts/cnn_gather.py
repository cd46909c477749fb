"""Rule cnn_gather: join the LOO shards and the control into actual loss changes.

Per removed point and test point: ``actual = L(theta_-i) - L(theta_hat)`` (the paper's
baseline) and ``actual_controlled = L(theta_-i) - L(theta_control)`` (same continued
training, nothing removed).
"""

import torch
import wfio
from infcore import cnn

log = wfio.setup(snakemake)
shards = [wfio.load_torch(p) for p in snakemake.input.shards]
ctrl = wfio.load_torch(snakemake.input.control)
removed = torch.cat([sh["removed"] for sh in shards])
if removed.tolist() != sorted(set(removed.tolist())):
    raise ValueError("CNN LOO shards overlap or are out of order")
losses = torch.cat([sh["eval_losses"] for sh in shards])  # (m, n_tests)
tests = ctrl["test_indices"].tolist()
base, control = ctrl["base_losses"], ctrl["eval_losses"][0]
rows, drift = [], {}
for j, t in enumerate(tests):
    diffs = cnn.loo_differences(losses[:, j].double(), removed, float(base[j]), float(control[j]))
    drift[str(t)] = float(control[j] - base[j])
    for r, i in enumerate(removed.tolist()):
        rows.append({"test_index": t, "train_index": i, "test_loss_without": float(losses[r, j]),
                     "test_loss": float(base[j]), "control_loss": float(control[j]),
                     "actual": float(diffs["actual_paper"][r]),
                     "actual_controlled": float(diffs["actual_controlled"][r])})
    log.info("test %d: control drift L(control) - L(theta_hat) = %.4g", t, drift[str(t)])
seconds = sum(float(sh["seconds"]) for sh in shards)
m = int(removed.numel())
wfio.save_csv(rows, snakemake.output.csv)
wfio.save_json({"points": m, "shards": len(shards), "steps": int(ctrl["steps"]), "lr": float(ctrl["lr"]),
                "seconds": seconds, "control_seconds": float(ctrl["seconds"]),
                "seconds_per_point": seconds / m if m else 0.0, "control_drift": drift},
               snakemake.output.info)
log.info("%d points from %d shards, %.1f s of LOO training", m, len(shards), seconds)
