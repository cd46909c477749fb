# Datasets: MNIST (read and checked from its .gz files by infcore.mnist) or seeded random data.


# One mnist_download job per missing raw MNIST file. A file that exists is no job's output, so
# Snakemake never deletes it before a job or after a failed one (a failed offline download
# keeps the files already copied there), and no rerun trigger (--forceall, a touched script)
# can remove it; replacing files (e.g. fake by real ones) still reruns the data rule.
MNIST_MISSING = [p.name for p in mnist_raw_files(config["mnist_root"]) if not p.exists()]
if MNIST_MISSING:

    rule mnist_download:
        "Download one missing raw MNIST file, kept only if its MD5 is the canonical one."
        output:
            str(mnist_raw_dir(config["mnist_root"]) / "{mnist_file}"),
        log:
            "logs/mnist_download/{mnist_file}.log",
        benchmark:
            "benchmarks/mnist_download/{mnist_file}.tsv"
        wildcard_constraints:
            mnist_file=name_regex(MNIST_MISSING),
        localrule: True  # needs the network: runs on the submit host
        conda:
            "../../envs/torch.yaml"
        script:
            "../scripts/mnist_download.py"


rule data:
    "Build a dataset: MNIST (pixels / 255, validation images held out) or seeded random data."
    input:
        mnist=data_inputs,
    output:
        dataset="resources/datasets/{experiment}/dataset.pt",
        info="resources/datasets/{experiment}/dataset.json",
    log:
        "logs/data/{experiment}.log",
    benchmark:
        "benchmarks/data/{experiment}.tsv"
    conda:
        "../../envs/torch.yaml"
    params:
        dataset=lambda wc: exp_settings(wc, "dataset")["dataset"],
    script:
        "../scripts/data.py"
