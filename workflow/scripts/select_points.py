"""Rule select: the top_k training points by |CG prediction| for one test point."""

import wfio
from infcore.selection import top_k

log = wfio.setup(snakemake)
pred = wfio.load_torch(snakemake.input.pred)
labels = wfio.load_dataset(snakemake.input.dataset).y_train
k = int(snakemake.params.top_k)
idx = top_k(pred, k)
rows = [{"rank": r, "train_index": int(i), "train_label": int(labels[i]), "predicted": float(pred[i])}
        for r, i in enumerate(idx.tolist())]
log.info("selected %d of %d points; |pred| from %.3g down to %.3g", k, pred.numel(),
         abs(rows[0]["predicted"]), abs(rows[-1]["predicted"]))
wfio.save_csv(rows, snakemake.output.selection)
