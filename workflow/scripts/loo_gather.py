"""Rule loo_gather: join the LOO shards (in order) into actual test-loss differences."""

import wfio
from infcore.steps import gather_loo

log = wfio.setup(snakemake)
shards = [wfio.load_torch(p, timings=t) for p, t in zip(snakemake.input.shards, snakemake.input.timings, strict=True)]
rows, summary = gather_loo(shards)
log.info("%d points from %d shards, %.1f s retraining, max certificate %.3g", summary["points"],
         summary["shards"], summary["seconds"], summary["max_grad_maxnorm"])
wfio.save_csv(rows, snakemake.output.csv)
wfio.save_json({"experiment": snakemake.wildcards.experiment, **summary}, snakemake.output.info)
