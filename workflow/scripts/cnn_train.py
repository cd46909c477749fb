"""DRAFT rule cnn_train: train the Figure 2 CNN (Adam, minibatches, step schedule)."""

import cnn_common
import wfio
from infcore import cnn

log = wfio.setup(snakemake)
s = snakemake.params.settings
c = s["cnn"]
dev = cnn_common.device(s)
d = cnn_common.data(s, snakemake.params.mnist_root, dev)
t = c["train"]
log.info("n = %d, %d steps on %s", d.x_train.shape[0], t["steps"], dev)
res = cnn.train(d.x_train, d.y_train, steps=t["steps"], batch_size=t["batch_size"], lr=t["lr"],
                decay_steps=t["decay_steps"], decay_factors=t["decay_factors"], l2=s["l2"],
                seed=t["seed"], init_seed=t["init_seed"], width=c["width"],
                log_every=t["log_every"], progress=lambda a, b, m: log.info("step %d/%d %s", a, b, m))
wfio.save_torch({"theta": res.theta.cpu(), "adam_m": res.adam.m.cpu(), "adam_v": res.adam.v.cpu(),
                 "adam_step": res.adam.step, "global_step": res.global_step}, snakemake.output.state)
info = {
    "n_train": d.x_train.shape[0], "steps": res.steps, "seconds": res.seconds,
    "seconds_per_step": res.seconds / max(res.steps, 1), "device": dev,
    "final_lr": cnn.lr_at(res.global_step - 1, t["lr"], t["decay_steps"], t["decay_factors"]),
    "train_accuracy": cnn.accuracy(res.theta, d.x_train, d.y_train, c["width"]),
    "test_accuracy": cnn.accuracy(res.theta, d.x_test, d.y_test, c["width"]),
    "train_objective": float(cnn.objective(res.theta, d.x_train, d.y_train, s["l2"], c["width"])),
    "trace": res.trace,
}
log.info("train acc %.4f, test acc %.4f, %.1f s", info["train_accuracy"], info["test_accuracy"],
         res.seconds)
wfio.save_json(info, snakemake.output.info)
