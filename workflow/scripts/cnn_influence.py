"""Rule cnn_influence: CG influence of every training point on one test point; the top_k."""

import cnn_common
import torch
import wfio
from infcore import cnn
from infcore.selection import top_k

log = wfio.setup(snakemake)
s = snakemake.params.settings
inf, w = s["influence"], s["width"]
dev = cnn_common.device(s)
d = cnn_common.data(s, snakemake.params.mnist_root, dev)
theta, _, _ = cnn_common.load_state(snakemake.input.state, dev)
t = int(snakemake.wildcards.test)
xt, yt = d.x_test[t:t + 1], d.y_test[t:t + 1]
res = cnn.influence(theta, d.x_train, d.y_train, xt, yt, l2=s["l2"], damping=inf["damping"],
                    hvp_batch_size=inf["hvp_batch_size"], tol=inf["tol"], maxiter=inf["maxiter"], width=w)
log.info("CG: converged %s after %d iterations (%s); min curvature %.3g; %.1f s per HVP; %.1f s",
         res.cg.converged, res.cg.iterations, res.cg.message, res.min_curvature, res.hvp_seconds, res.seconds)
if not res.cg.converged:
    log.warning("CG stopped before tol (%s): the predictions use its last iterate (the original "
                "fmin_ncg also truncates at negative curvature)", res.cg.message)
with torch.no_grad():
    predicted_label = int(cnn.stacked_logits(theta, xt, w).argmax(-1).reshape(-1)[0])
pred = res.pred.cpu()
idx = top_k(pred, s["top_k"])
rows = [{"rank": r, "train_index": int(i), "mnist_index": int(d.train_source[i]),
         "train_label": int(d.y_train[i]), "predicted": float(pred[i])} for r, i in enumerate(idx.tolist())]
wfio.save_csv(rows, snakemake.output.selection)
wfio.save_torch({"pred": pred, "s": res.s.cpu(), "g_test": res.g_test.cpu()}, snakemake.output.pred)
wfio.save_json({"test_index": t, "label": int(yt[0]), "predicted_label": predicted_label,
                "correct": predicted_label == int(yt[0]), "test_loss": res.test_loss,
                "n_train": d.x_train.shape[0], "damping": inf["damping"],
                "hvp_batch_size": inf["hvp_batch_size"], "cg": res.cg.summary(),
                "cg_converged": res.cg.converged, "cg_iterations": res.cg.iterations,
                "min_curvature": res.min_curvature, "hvp_seconds": res.hvp_seconds,
                "seconds": res.seconds}, snakemake.output.info)
