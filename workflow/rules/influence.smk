# Influence-function predictions: CG for every training point, selection of the top_k by
# |CG prediction|, LiSSA for the selected points (and the Gauss-Newton influence where an
# experiment asks for it). One job per experiment and test point.


rule influence_cg:
    "Predicted test-loss change of removing each training point, for one test point (CG)."
    input:
        dataset=dataset_path,
        theta=theta_path,
        factor=cg_factor_input,
    output:
        pred="results/{experiment}/influence_cg/test_{test}.pt",
        info="results/{experiment}/influence_cg/test_{test}.json",
    log:
        "logs/influence_cg/{experiment}/test_{test}.log",
    benchmark:
        "benchmarks/influence_cg/{experiment}/test_{test}.tsv"
    wildcard_constraints:
        experiment=name_regex(PIPELINE),
    conda:
        "../../envs/torch.yaml"
    threads: pipeline_threads(4)
    resources:
        mem_mb=mem_mb,
    params:
        settings=lambda wc: exp_settings(wc, "model", "cnn", "l2", "cg"),
    script:
        "../scripts/influence_cg.py"


rule select:
    "Pick the top_k training points by |CG prediction| for one test point."
    input:
        pred="results/{experiment}/influence_cg/test_{test}.pt",
        dataset=dataset_path,
    output:
        selection="results/{experiment}/select/test_{test}.csv",
    log:
        "logs/select/{experiment}/test_{test}.log",
    wildcard_constraints:
        experiment=name_regex(PIPELINE),
    conda:
        "../../envs/torch.yaml"
    params:
        top_k=lambda wc: EXPERIMENTS[wc.experiment]["top_k"],
    script:
        "../scripts/select_points.py"


rule influence_lissa:
    "LiSSA predictions for the selected training points of one test point."
    input:
        dataset=dataset_path,
        theta=theta_path,
        selection="results/{experiment}/select/test_{test}.csv",
    output:
        pred="results/{experiment}/influence_lissa/test_{test}.csv",
        info="results/{experiment}/influence_lissa/test_{test}.json",
    log:
        "logs/influence_lissa/{experiment}/test_{test}.log",
    benchmark:
        "benchmarks/influence_lissa/{experiment}/test_{test}.tsv"
    wildcard_constraints:
        experiment=name_regex(PIPELINE),
    conda:
        "../../envs/torch.yaml"
    # One thread: each LiSSA step is a handful of tiny products, where extra OpenMP threads
    # only spin (measured: 4 ms/step with 1 thread, 107 ms/step with 2 on a busy 2-core host).
    threads: 1
    resources:
        mem_mb=mem_mb,
    params:
        settings=lambda wc: exp_settings(wc, "model", "cnn", "l2", "lissa"),
    script:
        "../scripts/influence_lissa.py"


rule influence_gn:
    "Gauss-Newton influence (explicit solve) for the selected points of one test point."
    input:
        dataset=dataset_path,
        theta=theta_path,
        cg_pred="results/{experiment}/influence_cg/test_{test}.pt",
        selection="results/{experiment}/select/test_{test}.csv",
    output:
        pred="results/{experiment}/influence_gn/test_{test}.csv",
        info="results/{experiment}/influence_gn/test_{test}.json",
    log:
        "logs/influence_gn/{experiment}/test_{test}.log",
    benchmark:
        "benchmarks/influence_gn/{experiment}/test_{test}.tsv"
    wildcard_constraints:
        experiment=name_regex([n for n in PIPELINE if EXPERIMENTS[n]["gauss_newton"]]),
    conda:
        "../../envs/torch.yaml"
    threads: pipeline_threads(2)
    resources:
        mem_mb=mem_mb,
    params:
        settings=lambda wc: exp_settings(wc, "model", "cnn", "l2", "cg"),
    script:
        "../scripts/influence_gn.py"
