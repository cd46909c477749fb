"""Rule cnn_figure: the 'CNN' panel of Figure 2 for one experiment, with its CSV and JSON.

Per test point two panels on shared axes: 'CNN' (actual against theta_hat, the paper's
baseline) and 'CNN (controlled)' (actual against the control run: the same continued
training with nothing removed). Pearson/Spearman of both go to the JSON.
"""

import wfio
from infcore.plotting import influence_figure, panel_groups, point_title
from infcore.tables import cnn_figure_table

log = wfio.setup(snakemake)
exp = snakemake.wildcards.experiment
infos = [wfio.load_json(p) for p in snakemake.input.influence]
rows, record = cnn_figure_table(exp, [wfio.load_csv(p) for p in snakemake.input.selections], infos,
                                wfio.load_csv(snakemake.input.loo), wfio.load_json(snakemake.input.loo_info),
                                wfio.load_json(snakemake.input.train), snakemake.params.top_k,
                                snakemake.params.l2)
for paper, ctl in zip(record["panels"][::2], record["panels"][1::2], strict=True):
    log.info("test %d: Pearson %.3f / Spearman %.3f (vs theta_hat), %.3f / %.3f (vs control); drift %.4g",
             paper["test_index"], paper["pearson"], paper["spearman"], ctl["pearson"], ctl["spearman"],
             paper["control_drift"])
groups, _ = panel_groups(rows, record["panels"])
p = record["protocol"]
sub = (f"top {record['top_k']} of {record['n_train']} by |prediction|; train {p['train_steps']} steps, "
       f"LOO {p['loo_steps']} continued steps, damping {p['damping']:g}")
fig = influence_figure(groups, groups_per_row=1 if len(groups) > 1 else None,
                       group_titles=[point_title(i) for i in infos],
                       suptitle=f"{exp} (CNN): {sub}\nleft: actual vs theta_hat (paper); right: vs control run")
wfio.save_figure(fig, snakemake.output.png, snakemake.output.pdf)
wfio.save_csv(rows, snakemake.output.csv)
wfio.save_json(record, snakemake.output.json)
log.info("%s: %d test points", exp, len(infos))
