"""Rule data: build an experiment's dataset (MNIST or seeded random) and describe it."""

from pathlib import Path

import wfio
from infcore.data import make_dataset

log = wfio.setup(snakemake)
settings = snakemake.params.dataset
mnist = snakemake.input.mnist
root = Path(mnist[0]).parents[2] if mnist else None  # {root}/MNIST/raw/<file>
ds = make_dataset(settings, mnist_root=root)  # MNIST: files checked (infcore.mnist.read_mnist)
info = {"settings": settings, **ds.describe()}
log.info("dataset: %d train, %d test, %d features, %d classes", ds.n_train, ds.n_test, ds.n_features, ds.n_classes)
if "canonical_files" in info:
    log.info("MNIST files: canonical (MD5s match): %s", info["canonical_files"])
wfio.save_torch(ds.to_dict(), snakemake.output.dataset)
wfio.save_json(info, snakemake.output.info)
