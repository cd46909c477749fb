# Actual leave-one-out retraining of the selected points (union over the experiment's test
# points), split into `loo_shards` independent jobs (scattergather 'loo'; override with
# --set-scatter loo=N) and joined in index order. The chord matrix every LOO point steps with
# is factored once per model (experiments sharing a model share it too).


rule loo_factor:
    "Factor the LOO chord matrix (Cholesky) once per fitted model."
    input:
        dataset=dataset_path,
        theta="results/{experiment}/train/theta.pt",
    output:
        factor="results/{experiment}/loo/chord_factor.pt",
    log:
        "logs/loo_factor/{experiment}.log",
    benchmark:
        "benchmarks/loo_factor/{experiment}.tsv"
    wildcard_constraints:
        experiment=name_regex(PIPELINE),
    conda:
        "../../envs/torch.yaml"
    threads: pipeline_threads(4)
    resources:
        mem_mb=mem_mb,
    params:
        settings=lambda wc: exp_settings(wc, "model", "cnn", "l2"),
    script:
        "../scripts/loo_factor.py"


rule loo_shard:
    "Certified leave-one-out retraining of one shard of the selected points."
    input:
        selections=test_files("results/{experiment}/select/test_{test}.csv"),
        dataset=dataset_path,
        theta=theta_path,
        factor=factor_path,
    output:
        shard="results/{experiment}/loo/shards/{scatteritem}.pt",
        timings="results/{experiment}/loo/shards/{scatteritem}.timings.json",
    log:
        "logs/loo_shard/{experiment}/{scatteritem}.log",
    benchmark:
        "benchmarks/loo_shard/{experiment}/{scatteritem}.tsv"
    wildcard_constraints:
        experiment=name_regex(PIPELINE),
        scatteritem=r"\d+-of-\d+",
    conda:
        "../../envs/torch.yaml"
    threads: pipeline_threads(4)
    resources:
        mem_mb=mem_mb,
    params:
        settings=lambda wc: exp_settings(wc, "model", "cnn", "l2", "loo", "test_indices"),
    script:
        "../scripts/loo_shard.py"


rule loo_gather:
    "Join the LOO shards into the actual test-loss changes (loo.csv)."
    input:
        shards=gather.loo("results/{{experiment}}/loo/shards/{scatteritem}.pt"),
        timings=gather.loo("results/{{experiment}}/loo/shards/{scatteritem}.timings.json"),
    output:
        csv="results/{experiment}/loo/loo.csv",
        info="results/{experiment}/loo/loo.json",
    log:
        "logs/loo_gather/{experiment}.log",
    wildcard_constraints:
        experiment=name_regex(PIPELINE),
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/loo_gather.py"
