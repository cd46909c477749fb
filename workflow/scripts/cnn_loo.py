"""Rules cnn_loo_shard / cnn_control: LOO by continued training (batched), or the control run.

A shard retrains its part of the sorted union of the selected points (all test points);
the control continues training with nothing removed (on the shared minibatch stream, or
its own with cnn.loo.streams: independent).
"""

import wfio
from infcore.cnn import CONTROL
from infcore.cnn.steps import load_data, loo_runs
from infcore.config import parse_scatteritem, shard_indices

log = wfio.setup(snakemake)
s = snakemake.params.settings
if snakemake.params.control:
    remove = [CONTROL]
else:
    shard, shards = parse_scatteritem(snakemake.wildcards.scatteritem)
    sel = [[int(r["train_index"]) for r in wfio.load_csv(p)] for p in snakemake.input.selections]
    remove = shard_indices(sel, shard, shards).tolist()
d = load_data(s, snakemake.params.mnist_root)
out = loo_runs(s, d, wfio.load_torch(snakemake.input.state), remove, log=log.info)
wfio.save_torch(out, snakemake.output.shard, timings=snakemake.output.timings)
