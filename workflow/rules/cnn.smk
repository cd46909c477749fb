# DRAFT (not included by the Snakefile yet): the CNN panel of Figure 2 (infcore.cnn).
# Experiments with `model: cnn`. Stages: train -> influence (CG, all n points) + top_k ->
# LOO retraining of the selected points in scattergather shards, plus one control run (the
# same continued steps with nothing removed) -> gather (figure.csv / figure.json, both
# baselines). Each script is thin; all logic is in workflow/scripts/infcore/cnn.py.

CNN = [name for name, exp in EXPERIMENTS.items() if exp["model"] == "cnn"]


def cnn_settings(wildcards):
    exp = EXPERIMENTS[wildcards.experiment]
    return canonical({k: exp[k] for k in ("dataset", "l2", "test_indices", "top_k", "cnn")})


def cnn_threads(wildcards):
    return 1 if EXPERIMENTS[wildcards.experiment]["cnn"]["device"] == "cuda" else 2


rule cnn_train:
    input:
        raw=data_inputs,
    output:
        state="results/{experiment}/cnn/train.pt",
        info="results/{experiment}/cnn/train.json",
    log:
        "logs/cnn_train/{experiment}.log",
    benchmark:
        "benchmarks/cnn_train/{experiment}.tsv"
    conda:
        "../../envs/torch.yaml"
    wildcard_constraints:
        experiment=name_regex(CNN),
    params:
        settings=cnn_settings,
        mnist_root=config["mnist_root"],
    threads: 2
    script:
        "../scripts/cnn_train.py"


rule cnn_influence:
    input:
        raw=data_inputs,
        state="results/{experiment}/cnn/train.pt",
    output:
        pred="results/{experiment}/cnn/influence/test_{test}.pt",
        info="results/{experiment}/cnn/influence/test_{test}.json",
        selection="results/{experiment}/select/test_{test}.csv",
    log:
        "logs/cnn_influence/{experiment}/test_{test}.log",
    benchmark:
        "benchmarks/cnn_influence/{experiment}/test_{test}.tsv"
    conda:
        "../../envs/torch.yaml"
    wildcard_constraints:
        experiment=name_regex(CNN),
    params:
        settings=cnn_settings,
        mnist_root=config["mnist_root"],
    threads: 2
    script:
        "../scripts/cnn_influence.py"


rule cnn_loo_shard:
    input:
        raw=data_inputs,
        state="results/{experiment}/cnn/train.pt",
        selections=test_files("results/{experiment}/select/test_{test}.csv"),
    output:
        shard="results/{experiment}/cnn/loo/shards/{scatteritem}.pt",
    log:
        "logs/cnn_loo_shard/{experiment}/{scatteritem}.log",
    benchmark:
        "benchmarks/cnn_loo_shard/{experiment}/{scatteritem}.tsv"
    conda:
        "../../envs/torch.yaml"
    wildcard_constraints:
        experiment=name_regex(CNN),
    params:
        settings=cnn_settings,
        mnist_root=config["mnist_root"],
        control=False,
    threads: 2
    script:
        "../scripts/cnn_loo.py"


rule cnn_control:
    input:
        raw=data_inputs,
        state="results/{experiment}/cnn/train.pt",
    output:
        shard="results/{experiment}/cnn/loo/control.pt",
    log:
        "logs/cnn_control/{experiment}.log",
    benchmark:
        "benchmarks/cnn_control/{experiment}.tsv"
    conda:
        "../../envs/torch.yaml"
    wildcard_constraints:
        experiment=name_regex(CNN),
    params:
        settings=cnn_settings,
        mnist_root=config["mnist_root"],
        control=True,
    threads: 2
    script:
        "../scripts/cnn_loo.py"


rule cnn_gather:
    input:
        shards=gather.loo("results/{{experiment}}/cnn/loo/shards/{scatteritem}.pt"),
        control="results/{experiment}/cnn/loo/control.pt",
        pred=test_files("results/{experiment}/cnn/influence/test_{test}.pt"),
        info=test_files("results/{experiment}/cnn/influence/test_{test}.json"),
        train="results/{experiment}/cnn/train.json",
    output:
        csv="results/{experiment}/cnn/figure.csv",
        json="results/{experiment}/cnn/figure.json",
    log:
        "logs/cnn_gather/{experiment}.log",
    conda:
        "../../envs/torch.yaml"
    wildcard_constraints:
        experiment=name_regex(CNN),
    params:
        settings=cnn_settings,
    script:
        "../scripts/cnn_gather.py"


EXTRA_TARGETS += [f"results/{name}/cnn/figure.{ext}" for name in CNN for ext in ("csv", "json")]
