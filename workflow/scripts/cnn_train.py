"""Rule cnn_train: train the Figure 2 CNN (Adam on minibatches, step schedule)."""

import cnn_common
import wfio
from infcore import cnn

log = wfio.setup(snakemake)
s = snakemake.params.settings
dev = cnn_common.device(s)
d = cnn_common.data(s, snakemake.params.mnist_root, dev)
t, w = s["train"], s["width"]
log.info("n = %d, dim = %d, %d steps on %s", d.x_train.shape[0], cnn.num_params(w), t["steps"], dev)
res = cnn.train(d.x_train, d.y_train, steps=t["steps"], batch_size=t["batch_size"], lr=t["lr"],
                decay_steps=t["decay_steps"], decay_factors=t["decay_factors"], l2=s["l2"],
                seed=t["seed"], init_seed=t["init_seed"], width=w, log_every=t["log_every"],
                progress=lambda a, b, m: log.info("step %d/%d %s", a, b, m))
cnn_common.save_state(res, snakemake.output.state)
info = {
    "settings": s, "n_train": d.x_train.shape[0], "n_test": d.x_test.shape[0], "dim": cnn.num_params(w),
    "steps": res.steps, "seconds": res.seconds, "seconds_per_step": res.seconds / max(res.steps, 1),
    "device": dev, "final_lr": cnn.lr_at(res.global_step - 1, t["lr"], t["decay_steps"], t["decay_factors"]),
    "train_accuracy": cnn.accuracy(res.theta, d.x_train, d.y_train, w),
    "test_accuracy": cnn.accuracy(res.theta, d.x_test, d.y_test, w),
    "train_objective": float(cnn.objective(res.theta, d.x_train, d.y_train, s["l2"], w)),
    "trace": res.trace,
}
log.info("train accuracy %.4f, test accuracy %.4f, objective %.4g, %.1f s", info["train_accuracy"],
         info["test_accuracy"], info["train_objective"], res.seconds)
wfio.save_json(info, snakemake.output.info)
