# Fit the linear model to a certified optimum (max |gradient| <= fit.tol).


rule train:
    input:
        dataset=dataset_path,
    output:
        theta="results/{experiment}/train/theta.pt",
        info="results/{experiment}/train/train.json",
    log:
        "logs/train/{experiment}.log",
    benchmark:
        "benchmarks/train/{experiment}.tsv"
    conda:
        "../../envs/torch.yaml"
    wildcard_constraints:
        experiment=name_regex(LOGREG),
    params:
        settings=lambda wc: exp_settings(wc, "model", "l2", "fit"),
    threads: 4
    resources:
        mem_mb=mem_mb,
    script:
        "../scripts/train.py"
