"""Rule paper_figure: Figure 2 of Koh & Liang (2017) in the paper's layout, with a comparison table.

Panels 'Linear (exact)' and 'Linear (approx)' come from the experiment named by
paper_figure.linear (its first test point); the third panel, 'CNN (certified minimum)', from
paper_figure.certified (the CNN at a certified local minimum, its CG panel); a 'CNN' panel
(the paper's SGD protocol) is added when paper_figure.cnn names an experiment whose
figure.csv / figure.json are inputs of this rule.
"""

import wfio
from infcore.plotting import influence_figure, panel_groups, point_title
from infcore.tables import PAPER_COLUMNS, PAPER_HEADERS, PAPER_R, markdown_table, paper_rows

log = wfio.setup(snakemake)


def pick(csv_path, json_path, test_index, wanted):
    rec = wfio.load_json(json_path)
    if test_index is None:  # experiment not in this config: its first test point with such a panel
        test_index = next(int(p["test_index"]) for p in rec["panels"] if p["panel"] in wanted)
    panels = [p for p in rec["panels"] if int(p["test_index"]) == test_index and p["panel"] in wanted]
    if not panels:
        raise ValueError(f"{json_path}: no panel {wanted} for test point {test_index}")
    timings = rec.get("timings", {})
    for p in panels:
        step = p.get("seconds")
        p["seconds"] = {
            "train": timings.get("train_seconds"),
            p["method"]: step if isinstance(step, int | float) else None,
            "LOO per point": timings.get("loo_seconds_per_point"),
        }
        p.update(experiment=rec["experiment"], n_train=rec.get("n_train"), top_k=rec.get("top_k"))
    rows = [r for r in wfio.load_csv(csv_path) if int(r["test_index"]) == test_index and r["panel"] in wanted]
    groups, _ = panel_groups(rows, panels)
    return groups[0], panels


group, panels = pick(snakemake.input.linear_csv, snakemake.input.linear_json, snakemake.params.linear_test,
                     ("Linear (exact)", "Linear (approx)"))
groups = [group]
titles = [f"{panels[0]['experiment']}: {point_title(panels[0])}"]
if "certified_json" in snakemake.input.keys():
    cert_group, cert_panels = pick(snakemake.input.certified_csv, snakemake.input.certified_json,
                                   snakemake.params.certified_test, ("CNN (certified minimum)",))
    groups.append(cert_group)
    titles.append(f"{cert_panels[0]['experiment']}: {point_title(cert_panels[0])}")
    panels += cert_panels
if "cnn_json" in snakemake.input.keys():
    cnn_group, cnn_panels = pick(snakemake.input.cnn_csv, snakemake.input.cnn_json, snakemake.params.cnn_test, ("CNN",))
    groups.append(cnn_group)
    titles.append(f"{cnn_panels[0]['experiment']}: {point_title(cnn_panels[0])}")
    panels += cnn_panels
for group in groups:  # the paper's R beside ours in each panel
    for p in group:
        p["stats"] = {**p["stats"], "paper_pearson": PAPER_R.get(p["title"])}
caption = ("Paper: Koh & Liang (2017), Figure 2. The paper's CNN value (0.86) comes from its SGD protocol (Adam, "
           "30,000 continued steps per removed point); 'CNN (certified minimum)' compares the influence function "
           "with certified leave-one-out optima at a certified local minimum.") if "certified_json" in snakemake.input.keys() else None
fig = influence_figure(groups, suptitle="Influence functions vs leave-one-out retraining (Koh & Liang 2017, Fig. 2)",
                       group_titles=titles, caption=caption)
wfio.save_figure(fig, snakemake.output.png, snakemake.output.pdf)
table = paper_rows(panels)
md = ("# Figure 2: predicted vs actual change in test loss\n\n"
      "x: actual change in the test point's loss when a training point is removed and the model retrained "
      "(certified leave-one-out optimum); y: the influence-function prediction. Points: the top k training "
      "points by |CG prediction|. Paper values: Koh & Liang (2017), Figure 2; the paper's CNN value (0.86) "
      "comes from its SGD protocol (Adam, 30,000 continued steps per removed point), ours for 'CNN (certified "
      "minimum)' from a certified local minimum and certified LOO optima.\n\n"
      + markdown_table(table, PAPER_COLUMNS, PAPER_HEADERS))
wfio.save_text(md, snakemake.output.md)
wfio.save_json({"panels": panels, "paper_pearson": PAPER_R, "table": table}, snakemake.output.json)
for row in table:
    log.info("%s: Pearson %.4f (paper %s)", row["panel"], row["pearson"], row["paper_pearson"])
