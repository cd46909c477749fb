# Fit the linear model to a certified optimum (max |gradient| <= fit.tol).


rule train:
    "Fit the linear model to a certified optimum (max |gradient| <= fit.tol)."
    input:
        dataset=dataset_path,
    output:
        theta="results/{experiment}/train/theta.pt",
        info="results/{experiment}/train/train.json",
    log:
        "logs/train/{experiment}.log",
    benchmark:
        "benchmarks/train/{experiment}.tsv"
    wildcard_constraints:
        experiment=name_regex(PIPELINE),
    conda:
        "../../envs/torch.yaml"
    threads: pipeline_threads(4)
    resources:
        mem_mb=mem_mb,
    params:
        settings=lambda wc: exp_settings(wc, "model", "cnn", "l2", "fit"),
    script:
        "../scripts/train.py"
