"""Rule cnn_influence: CG influence of every training point on one test point; the top_k."""

import wfio
from infcore.cnn.steps import influence_test_point, load_data

log = wfio.setup(snakemake)
s = snakemake.params.settings
d = load_data(s, snakemake.params.mnist_root)
state = wfio.load_torch(snakemake.input.state)
rows, tensors, info = influence_test_point(s, d, state, int(snakemake.wildcards.test), log=log.info,
                                           warn=log.warning)
wfio.save_csv(rows, snakemake.output.selection)
wfio.save_torch(tensors, snakemake.output.pred)
wfio.save_json(info, snakemake.output.info)
