"""Rule influence_cg: predicted test-loss change for every training point (CG inverse HVP)."""

import wfio
from infcore.steps import influence_cg, make_objective

log = wfio.setup(snakemake)
settings = snakemake.params.settings
t = int(snakemake.wildcards.test)
ds = wfio.load_dataset(snakemake.input.dataset)
theta = wfio.load_torch(snakemake.input.theta)
obj = make_objective(ds, settings)
factor = wfio.load_torch(snakemake.input.factor) if snakemake.input.get("factor") else None
pred, diag = influence_cg(obj, theta, ds, t, settings["cg"], log=log.info, factor=factor)
wfio.save_torch(pred, snakemake.output.pred)
wfio.save_json({"experiment": snakemake.wildcards.experiment, **diag}, snakemake.output.info)
