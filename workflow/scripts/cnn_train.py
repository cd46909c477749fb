"""Rule cnn_train: train the Figure 2 CNN (Adam on minibatches, step schedule)."""

import wfio
from infcore.cnn import num_params
from infcore.cnn.steps import load_data, train_model

log = wfio.setup(snakemake)
s = snakemake.params.settings
d = load_data(s, snakemake.params.mnist_root)
log.info("n = %d, dim = %d, %d steps on %s", d.x_train.shape[0], num_params(s["width"]), s["train"]["steps"],
         s["device"])
state, info = train_model(s, d, progress=lambda a, b, m: log.info("step %d/%d %s", a, b, m))
log.info("train accuracy %.4f, test accuracy %.4f, objective %.4g, %.1f s", info["train_accuracy"],
         info["test_accuracy"], info["train_objective"], info["seconds"])
wfio.save_torch(state, snakemake.output.state)
wfio.save_json(info, snakemake.output.info)
