"""Rule influence_gn: the Gauss-Newton influence (explicit solve) for the selected training
points of one test point, a second estimate beside CG's, with its agreement with CG."""

import torch
import wfio
from infcore.steps import influence_gn, make_objective

log = wfio.setup(snakemake)
settings = snakemake.params.settings
t = int(snakemake.wildcards.test)
ds = wfio.load_dataset(snakemake.input.dataset)
theta = wfio.load_torch(snakemake.input.theta)
cg_pred = wfio.load_torch(snakemake.input.cg_pred)
idx = torch.tensor([int(r["train_index"]) for r in wfio.load_csv(snakemake.input.selection)])
obj = make_objective(ds, settings)
pred, diag = influence_gn(obj, theta, ds, t, idx, cg_pred, settings["cg"]["damping"], log=log.info)
wfio.save_csv([{"train_index": int(i), "predicted": float(p)} for i, p in zip(idx.tolist(), pred.tolist(), strict=True)],
              snakemake.output.pred)
wfio.save_json({"experiment": snakemake.wildcards.experiment, **diag}, snakemake.output.info)
