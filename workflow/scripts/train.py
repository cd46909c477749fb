"""Rule train: fit the model to a certified optimum; save theta and the fit record."""

import wfio
from infcore.steps import initial_point, make_objective, train

log = wfio.setup(snakemake)
settings = snakemake.params.settings
ds = wfio.load_dataset(snakemake.input.dataset)
obj = make_objective(ds, settings)
theta, record = train(obj, ds, settings["fit"], log=log.info, theta0=initial_point(obj, settings, log=log.info))
log.info("train accuracy %.4f, test accuracy %.4f, max|grad| %.3g, %.1f s", record["train_accuracy"],
         record["test_accuracy"], record["grad_maxnorm"], record["seconds"])
wfio.save_torch(theta, snakemake.output.theta)
wfio.save_json({"settings": settings, **record}, snakemake.output.info)
