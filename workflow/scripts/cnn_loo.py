"""DRAFT rules cnn_loo_shard / cnn_control: batched LOO retraining (or the control run)."""

import cnn_common
import torch
import wfio
from infcore import cnn
from infcore.experiment import parse_scatteritem, shard_indices

log = wfio.setup(snakemake)
s = snakemake.params.settings
c, lo = s["cnn"], s["cnn"]["loo"]
dev = cnn_common.device(s)
d = cnn_common.data(s, snakemake.params.mnist_root, dev)
theta, adam, st = cnn_common.load_state(snakemake.input.state, dev)
if snakemake.params.control:
    remove = [cnn.CONTROL]
else:
    shard, shards = parse_scatteritem(snakemake.wildcards.scatteritem)
    sel = [[int(r["train_index"]) for r in wfio.load_csv(p)] for p in snakemake.input.selections]
    remove = shard_indices(sel, shard, shards).tolist()
tr = c["train"]
lr = lo["lr"] if lo.get("lr") is not None else cnn.lr_at(
    st["global_step"] - 1, tr["lr"], tr["decay_steps"], tr["decay_factors"])
tests = torch.as_tensor(s["test_indices"], device=dev)
log.info("%d runs x %d steps at lr %g on %s", len(remove), lo["steps"], lr, dev)
res = cnn.retrain(theta, adam, d.x_train, d.y_train, remove, steps=lo["steps"], lr=lr,
                  batch_size=tr["batch_size"], l2=s["l2"], seed=lo["seed"], width=c["width"],
                  x_eval=d.x_test[tests], y_eval=d.y_test[tests], chunk=lo.get("chunk"),
                  streams=lo.get("streams", "shared"),
                  progress=lambda a, b, m: log.info("%d/%d %s", a, b, m))
base = cnn.example_losses(theta, d.x_test[tests], d.y_test[tests], c["width"]).cpu()
wfio.save_torch({"removed": res.removed.cpu(), "test_indices": s["test_indices"],
                 "eval_losses": (res.eval_losses.cpu() if res.eval_losses is not None
                                 else torch.zeros(0, len(s["test_indices"]))),
                 "base_losses": base, "lr": lr, "steps": lo["steps"], "seconds": res.seconds},
                snakemake.output.shard)
log.info("done in %.1f s", res.seconds)
