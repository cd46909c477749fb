"""Rule cnn_gather: join the LOO shards and the control into actual loss changes.

Per removed point and test point: ``actual = L(theta_-i) - L(theta_hat)`` (the paper's
baseline) and ``actual_controlled = L(theta_-i) - L(theta_control)`` (same continued
training, nothing removed); the linear models' gather step, given the control run.
"""

import wfio
from infcore.steps import gather_loo

log = wfio.setup(snakemake)
shards = [wfio.load_torch(p, timings=t) for p, t in zip(snakemake.input.shards, snakemake.input.timings, strict=True)]
control = wfio.load_torch(snakemake.input.control, timings=snakemake.input.control_timings)
rows, summary = gather_loo(shards, control=control)
for t, drift in summary["control_drift"].items():
    log.info("test %s: control drift L(control) - L(theta_hat) = %.4g", t, drift)
log.info("%d points from %d shards, %.1f s of LOO training", summary["points"], summary["shards"],
         summary["seconds"])
wfio.save_csv(rows, snakemake.output.csv)
wfio.save_json(summary, snakemake.output.info)
