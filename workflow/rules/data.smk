# Each dataset is written once to Zarr, with its generator settings, seed and content hash.


rule make_dataset:
    output:
        store=directory(f"{R}/data/{{dataset}}.zarr"),
    log:
        f"{R}/logs/make_dataset/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/make_dataset/{{dataset}}.tsv"
    threads: 1
    resources:
        mem_mb=res("make_dataset", "mem_mb"),
        runtime=res("make_dataset", "runtime"),
    conda:
        ENV
    script:
        "../../tasks/make_dataset.py"
