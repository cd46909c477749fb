"""Rule mnist_download: fetch one missing MNIST file; it takes its name only once its MD5 is
the canonical one (mirrors: infcore.mnist.mnist_mirrors, overridable by INFCORE_MNIST_MIRRORS)."""

from pathlib import Path

import wfio
from infcore.mnist import download_mnist, mnist_mirrors

log = wfio.setup(snakemake)
path = Path(snakemake.output[0])
root = path.parents[2]  # {root}/MNIST/raw/<file>
download_mnist(root, names=[path.name], mirrors=mnist_mirrors(), log=log.info)
