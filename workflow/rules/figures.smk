# Figures and tables: per test point, per experiment, the summary across experiments and the
# paper's Figure 2.


rule figure_point:
    "Figure 2 panels for one test point, with the CSV behind them and their statistics."
    input:
        unpack(gn_inputs),
        selection="results/{experiment}/select/test_{test}.csv",
        cg_info="results/{experiment}/influence_cg/test_{test}.json",
        lissa="results/{experiment}/influence_lissa/test_{test}.csv",
        lissa_info="results/{experiment}/influence_lissa/test_{test}.json",
        loo="results/{experiment}/loo/loo.csv",
        loo_info="results/{experiment}/loo/loo.json",
    output:
        png=report(
            "results/{experiment}/test_{test}/figure.png",
            caption="../report/figure_point.rst",
            category="Per test point",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "test point": "{test}"},
        ),
        pdf="results/{experiment}/test_{test}/figure.pdf",
        csv="results/{experiment}/test_{test}/figure.csv",
        json="results/{experiment}/test_{test}/figure.json",
    log:
        "logs/figure_point/{experiment}/test_{test}.log",
    wildcard_constraints:
        experiment=name_regex(PIPELINE),
    conda:
        "../../envs/plot.yaml"
    params:
        top_k=lambda wc: EXPERIMENTS[wc.experiment]["top_k"],
        model=lambda wc: EXPERIMENTS[wc.experiment]["model"],
    script:
        "../scripts/figure_point.py"


rule figure:
    "One experiment's panels over all its test points, with the combined CSV and JSON."
    input:
        csv=test_files("results/{experiment}/test_{test}/figure.csv"),
        json=test_files("results/{experiment}/test_{test}/figure.json"),
        train=train_info_path,
        loo_info="results/{experiment}/loo/loo.json",
    output:
        png=report(
            "results/{experiment}/figure.png",
            caption="../report/figure.rst",
            category="Experiments",
            labels={"experiment": "{experiment}"},
        ),
        pdf="results/{experiment}/figure.pdf",
        csv="results/{experiment}/figure.csv",
        json="results/{experiment}/figure.json",
    log:
        "logs/figure/{experiment}.log",
    wildcard_constraints:
        experiment=name_regex(PIPELINE),
    conda:
        "../../envs/plot.yaml"
    params:
        top_k=lambda wc: EXPERIMENTS[wc.experiment]["top_k"],
    script:
        "../scripts/figure.py"


rule summary:
    "The summary table over experiments, test points and methods (CSV and Markdown)."
    input:
        summary_inputs,
    output:
        csv=report(
            "results/summary.csv",
            caption="../report/summary.rst",
            category="Summary",
            labels={"table": "summary"},
        ),
        md="results/summary.md",
        timings_csv="results/timings.csv",
        timings_md="results/timings.md",
    log:
        "logs/summary/summary.log",
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/summary.py"


localrules:
    select,
    loo_gather,
    figure_point,
    figure,
    summary,
    paper_figure,


rule paper_figure:
    "Figure 2 in the paper's layout, with our Pearson R next to the paper's."
    input:
        unpack(paper_figure_inputs),
    output:
        png=report(
            "results/figure2.png",
            caption="../report/figure2.rst",
            category="Figure 2",
            labels={"figure": "Figure 2"},
        ),
        pdf="results/figure2.pdf",
        json="results/figure2.json",
        md="results/figure2.md",
    log:
        "logs/paper_figure/figure2.log",
    conda:
        "../../envs/plot.yaml"
    params:
        linear_test=first_test(config["paper_figure"]["linear"]),
        cnn_test=first_test(config["paper_figure"]["cnn"]),
        certified_test=first_test(config["paper_figure"].get("certified")),
    script:
        "../scripts/paper_figure.py"
