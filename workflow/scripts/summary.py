"""Rule summary: one table across experiments, test points and methods (CSV and Markdown)."""

import wfio
from infcore.tables import SUMMARY_COLUMNS, markdown_table, summary_rows

log = wfio.setup(snakemake)
rows = summary_rows(wfio.load_json(p) for p in snakemake.input)
wfio.save_csv(rows, snakemake.output.csv, columns=SUMMARY_COLUMNS)
md = ("# Predicted vs actual change in test loss\n\n"
      "One row per experiment, test point and method: agreement between the influence-function prediction\n"
      "and leave-one-out retraining over the top-k training points by |CG prediction|.\n\n"
      + markdown_table(rows, SUMMARY_COLUMNS))
wfio.save_text(md, snakemake.output.md)
log.info("%d rows", len(rows))
