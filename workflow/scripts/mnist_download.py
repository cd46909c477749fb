"""Rule mnist_download: the four MNIST files via torchvision (downloads only what is missing)."""

from pathlib import Path

import wfio
from infcore.data import download_mnist, md5sum

log = wfio.setup(snakemake)
root = Path(snakemake.output[0]).parents[2]  # {root}/MNIST/raw/<file>
for path in download_mnist(root):
    log.info("%s (%d bytes, md5 %s)", path, path.stat().st_size, md5sum(path))
