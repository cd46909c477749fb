"""Rules cnn_loo_shard / cnn_control: LOO by continued training (batched), or the control run.

A shard retrains its part of the sorted union of the selected points (all test points);
the control continues training with nothing removed on the same minibatch stream.
"""

import cnn_common
import torch
import wfio
from infcore import cnn
from infcore.config import parse_scatteritem, shard_indices

log = wfio.setup(snakemake)
s = snakemake.params.settings
lo, tr, w = s["loo"], s["train"], s["width"]
dev = cnn_common.device(s)
d = cnn_common.data(s, snakemake.params.mnist_root, dev)
theta, adam, st = cnn_common.load_state(snakemake.input.state, dev)
if snakemake.params.control:
    remove = [cnn.CONTROL]
else:
    shard, shards = parse_scatteritem(snakemake.wildcards.scatteritem)
    sel = [[int(r["train_index"]) for r in wfio.load_csv(p)] for p in snakemake.input.selections]
    remove = shard_indices(sel, shard, shards).tolist()
lr = lo["lr"] if lo["lr"] is not None else cnn.lr_at(
    int(st["global_step"]) - 1, tr["lr"], tr["decay_steps"], tr["decay_factors"])
tests = torch.as_tensor(s["test_indices"], device=dev)
xe, ye = d.x_test[tests], d.y_test[tests]
base = cnn.example_losses(theta, xe, ye, w).cpu()
out = {"removed": torch.as_tensor(remove, dtype=torch.long), "test_indices": torch.as_tensor(s["test_indices"]),
       "base_losses": base, "eval_losses": torch.zeros(0, len(s["test_indices"])), "lr": lr,
       "steps": lo["steps"], "seconds": 0.0}
if remove:
    log.info("%d runs x %d steps at lr %g on %s (streams %s)", len(remove), lo["steps"], lr, dev, lo["streams"])
    res = cnn.retrain(theta, adam, d.x_train, d.y_train, remove, steps=lo["steps"], lr=lr,
                      batch_size=tr["batch_size"], l2=s["l2"], seed=lo["seed"], width=w,
                      x_eval=xe, y_eval=ye, chunk=lo["chunk"], streams=lo["streams"],
                      progress=lambda a, b, m: log.info("%d/%d runs: %s", a, b, m))
    out.update(eval_losses=res.eval_losses.cpu(), seconds=res.seconds)
    log.info("done in %.1f s", res.seconds)
else:
    log.info("empty shard: nothing to retrain")
wfio.save_torch(out, snakemake.output.shard)
