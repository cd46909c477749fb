# The 'CNN' panel of Figure 2 (experiments with model: cnn; docs/cnn.md). Stages: train ->
# influence (CG with damping, all n points) + top_k selection, per test point -> LOO by
# continued training of the selected points in scattergather 'cnn_loo' shards, plus one
# control run (the same continued steps, nothing removed) -> gather -> figure (both
# baselines: theta_hat as in the paper, and the control run). Scripts are thin; the steps are
# in workflow/scripts/infcore/cnn/steps.py (the gather in infcore/steps.py, the figure table in
# infcore/tables.py). `rule all` includes these experiments only when
# run_cnn is true; the target fig2_cnn builds them (and Figure 2 with its 'CNN' panel).


# Own scatter name: --set-scatter loo=N (linear models) does not change the CNN shards.
scattergather:
    cnn_loo=config["cnn_loo_shards"],


# CPU: the training and CG passes use both threads; the LOO shards and the control run one
# thread each, side by side (on a busy 2-core host one thread per job was fastest,
# docs/cnn.md). On a GPU the thread count hardly matters.


rule cnn_train:
    "Train the Figure 2 CNN (Adam on minibatches, step schedule)."
    input:
        mnist=data_inputs,
    output:
        state="results/{experiment}/cnn/train.pt",
        info="results/{experiment}/cnn/train.json",
    log:
        "logs/cnn_train/{experiment}.log",
    benchmark:
        "benchmarks/cnn_train/{experiment}.tsv"
    wildcard_constraints:
        experiment=name_regex(CNN),
    conda:
        "../../envs/torch.yaml"
    threads: 2
    params:
        settings=cnn_params(),
        mnist_root=config["mnist_root"],
    script:
        "../scripts/cnn_train.py"


rule cnn_influence:
    "CNN: CG influence of every training point on one test point, and its top_k."
    input:
        mnist=data_inputs,
        state=cnn_state,
    output:
        pred="results/{experiment}/cnn/influence/test_{test}.pt",
        info="results/{experiment}/cnn/influence/test_{test}.json",
        selection="results/{experiment}/select/test_{test}.csv",
    log:
        "logs/cnn_influence/{experiment}/test_{test}.log",
    benchmark:
        "benchmarks/cnn_influence/{experiment}/test_{test}.tsv"
    wildcard_constraints:
        experiment=name_regex(CNN),
    conda:
        "../../envs/torch.yaml"
    threads: 2
    params:
        settings=cnn_params("influence", "top_k"),
        mnist_root=config["mnist_root"],
    script:
        "../scripts/cnn_influence.py"


rule cnn_loo_shard:
    "CNN: LOO by continued training for one shard of the selected points (batched)."
    input:
        mnist=data_inputs,
        state=cnn_state,
        selections=test_files("results/{experiment}/select/test_{test}.csv"),
    output:
        shard="results/{experiment}/cnn/loo/shards/{scatteritem}.pt",
        timings="results/{experiment}/cnn/loo/shards/{scatteritem}.timings.json",
    log:
        "logs/cnn_loo_shard/{experiment}/{scatteritem}.log",
    benchmark:
        "benchmarks/cnn_loo_shard/{experiment}/{scatteritem}.tsv"
    wildcard_constraints:
        experiment=name_regex(CNN),
        scatteritem=r"\d+-of-\d+",
    conda:
        "../../envs/torch.yaml"
    threads: 1
    params:
        settings=cnn_params("loo", "test_indices"),
        mnist_root=config["mnist_root"],
        control=False,
    script:
        "../scripts/cnn_loo.py"


rule cnn_control:
    "CNN: the control run, the same continued training with nothing removed."
    input:
        mnist=data_inputs,
        state=cnn_state,
    output:
        shard="results/{experiment}/cnn/loo/control.pt",
        timings="results/{experiment}/cnn/loo/control.timings.json",
    log:
        "logs/cnn_control/{experiment}.log",
    benchmark:
        "benchmarks/cnn_control/{experiment}.tsv"
    wildcard_constraints:
        experiment=name_regex(CNN),
    conda:
        "../../envs/torch.yaml"
    threads: 1
    params:
        settings=cnn_params("loo", "test_indices"),
        mnist_root=config["mnist_root"],
        control=True,
    script:
        "../scripts/cnn_loo.py"


rule cnn_gather:
    "CNN: join the LOO shards and the control into actual loss changes."
    input:
        shards=gather.cnn_loo("results/{{experiment}}/cnn/loo/shards/{scatteritem}.pt"),
        timings=gather.cnn_loo("results/{{experiment}}/cnn/loo/shards/{scatteritem}.timings.json"),
        control="results/{experiment}/cnn/loo/control.pt",
        control_timings="results/{experiment}/cnn/loo/control.timings.json",
        selections=test_files("results/{experiment}/select/test_{test}.csv"),
    output:
        csv="results/{experiment}/cnn/loo/loo.csv",
        info="results/{experiment}/cnn/loo/loo.json",
    log:
        "logs/cnn_gather/{experiment}.log",
    wildcard_constraints:
        experiment=name_regex(CNN),
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/cnn_gather.py"


rule cnn_figure:
    "CNN: the panels against theta_hat (the paper) and against the control run."
    input:
        selections=test_files("results/{experiment}/select/test_{test}.csv"),
        influence=test_files("results/{experiment}/cnn/influence/test_{test}.json"),
        loo="results/{experiment}/cnn/loo/loo.csv",
        loo_info="results/{experiment}/cnn/loo/loo.json",
        train=cnn_train_info,
    output:
        png=report(
            "results/{experiment}/figure.png",
            caption="../report/figure_cnn.rst",
            category="Experiments",
            labels={"experiment": "{experiment}"},
        ),
        pdf="results/{experiment}/figure.pdf",
        csv="results/{experiment}/figure.csv",
        json="results/{experiment}/figure.json",
    log:
        "logs/cnn_figure/{experiment}.log",
    wildcard_constraints:
        experiment=name_regex(CNN),
    conda:
        "../../envs/plot.yaml"
    params:
        top_k=lambda wc: EXPERIMENTS[wc.experiment]["top_k"],
        l2=lambda wc: EXPERIMENTS[wc.experiment]["l2"],
    script:
        "../scripts/cnn_figure.py"


# Target: the CNN experiments, the summary and Figure 2 with its 'CNN' panel.
rule fig2_cnn:
    "Target: the CNN experiments, the summary and Figure 2 with its 'CNN' panel."
    input:
        fig2_cnn_inputs,
    localrule: True
