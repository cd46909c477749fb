"""Rule loo_factor: the Cholesky factor of the LOO chord matrix, computed once per model."""

import wfio
from infcore.steps import loo_factor, make_objective

log = wfio.setup(snakemake)
ds = wfio.load_dataset(snakemake.input.dataset)
theta = wfio.load_torch(snakemake.input.theta)
obj = make_objective(ds, snakemake.params.settings)
factor, info = loo_factor(obj, theta, log=log.info)
wfio.save_torch(factor, snakemake.output.factor)
