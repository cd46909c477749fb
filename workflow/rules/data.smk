# Datasets: MNIST through torchvision (downloaded once into mnist_root) or seeded random data.


# The raw MNIST files are a job's outputs only while they are missing. Once they exist no rule
# produces them, so no rerun trigger (--forceall, a touched script) can make Snakemake delete
# them before a job; replacing them (e.g. fake by real files) still reruns the data rule.
if not all(p.exists() for p in mnist_raw_files(config["mnist_root"])):

    rule mnist_download:
        "Download the raw MNIST files through torchvision (defined only while missing)."
        output:
            [str(p) for p in mnist_raw_files(config["mnist_root"])],
        log:
            "logs/mnist_download/mnist.log",
        benchmark:
            "benchmarks/mnist_download/mnist.tsv"
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
