"""Rule loo_shard: certified leave-one-out retraining for one shard of the selected points."""

import wfio
from infcore.config import parse_scatteritem, shard_indices
from infcore.steps import loo_shard, make_objective

log = wfio.setup(snakemake)
settings = snakemake.params.settings
shard, shards = parse_scatteritem(snakemake.wildcards.scatteritem)
selections = [[int(r["train_index"]) for r in wfio.load_csv(p)] for p in snakemake.input.selections]
indices = shard_indices(selections, shard, shards)
log.info("shard %d of %d: %d of the selected points", shard, shards, len(indices))
ds = wfio.load_dataset(snakemake.input.dataset)
theta = wfio.load_torch(snakemake.input.theta)
factor = wfio.load_torch(snakemake.input.factor)
obj = make_objective(ds, settings)
out = loo_shard(obj, theta, ds, indices, settings["test_indices"], settings["loo"], log=log.info, factor=factor)
wfio.save_torch(out, snakemake.output.shard, timings=snakemake.output.timings)
