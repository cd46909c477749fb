"""Rule summary: one table across experiments, test points and methods (CSV and Markdown, whose
last section, from TIMINGS_HEADING on, holds the wall-clock seconds), and the wall-clock times
of the same rows in their own table (results/timings.*)."""

import wfio
from infcore.tables import (
      SUMMARY_COLUMNS,
      TIMING_COLUMNS,
      TIMINGS_HEADING,
      markdown_table,
      summary_rows,
)

log = wfio.setup(snakemake)
rows = summary_rows(wfio.load_json(p) for p in snakemake.input)
wfio.save_csv(rows, snakemake.output.csv, columns=SUMMARY_COLUMNS)
timings = markdown_table(rows, TIMING_COLUMNS)
md = ("# Predicted vs actual change in test loss\n\n"
      "One row per experiment, test point and method: agreement between the influence-function prediction\n"
      "and leave-one-out retraining over the top-k training points by |CG prediction|. Certificates:\n"
      "fit_max_grad, the fit's max|grad|; hessian_min_eigenvalue, the smallest Hessian eigenvalue at the fit\n"
      "off the null directions (non-convex models); loo_certified, the LOO optima certified to loo.tol (the\n"
      "others are not plotted); loo_max_grad, the largest certified LOO max|grad|.\n\n"
      + markdown_table(rows, SUMMARY_COLUMNS)
      + f"\n{TIMINGS_HEADING}\n\nThe same rows' wall-clock seconds in this run (results/timings.md):\n\n" + timings)
wfio.save_text(md, snakemake.output.md)
wfio.save_csv(rows, snakemake.output.timings_csv, columns=TIMING_COLUMNS)
wfio.save_text("# Wall-clock seconds per experiment, test point and method\n\n"
               "method: the CG or LiSSA solve; train: the fit; loo: all LOO retraining of the experiment\n"
               "(and per retrained point). These differ between runs; every other output does not.\n\n"
               + timings, snakemake.output.timings_md)
log.info("%d rows", len(rows))
