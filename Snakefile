# Reproduction of Figure 2 of Koh & Liang, "Understanding Black-box Predictions via Influence
# Functions" (ICML 2017): influence-function predictions (CG, LiSSA) vs leave-one-out retraining.
#
#   snakemake --cores 2                                   # all experiments in config/config.yaml
#   snakemake --cores 2 --configfile config/tiny.yaml     # the tiny CI config (replaces the default)
#   snakemake --cores 2 results/mnist_logreg/figure.png   # one experiment
#   snakemake --cores 2 fig2_cnn                          # the CNN panel (days on CPU: docs/cnn.md)
#   snakemake --cores 2 --configfile config/cnn_smoke.yaml  # a reduced CNN run (smoke test)
#   snakemake --report report.html                        # HTML report of the results
#
# The config is validated against config/schema.yaml before any job runs.

from snakemake.utils import min_version

min_version("9.0")


# A --configfile on the command line replaces the default config instead of being merged
# into it (merging would keep the default experiments next to the given ones).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


scattergather:
    loo=config["loo_shards"],


report: "workflow/report/workflow.rst"


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/influence.smk"
include: "workflow/rules/loo.smk"
include: "workflow/rules/cnn.smk"
include: "workflow/rules/figures.smk"


rule all:
    "Default target: the linear experiments' figures, summary and Figure 2 (CNN: run_cnn)."
    default_target: True
    input:
        all_targets(),
    localrule: True
