# Empirical NTK Gram matrices at every checkpoint, assembled block by block by Dask into Zarr.


rule assemble_gram:
    input:
        data=dataset_store,
        train=f"{R}/train/{{experiment}}.json",
    output:
        manifest=f"{R}/gram/{{experiment}}.json",
    params:
        train_store=lambda wildcards: f"{R}/train/{wildcards.experiment}.zarr",
        store=lambda wildcards: f"{R}/gram/{wildcards.experiment}.zarr",
    log:
        f"{R}/logs/assemble_gram/{{experiment}}.log",
    benchmark:
        f"{R}/benchmarks/assemble_gram/{{experiment}}.tsv"
    threads: res("assemble_gram", "threads")
    resources:
        mem_mb=res("assemble_gram", "mem_mb"),
        runtime=res("assemble_gram", "runtime"),
    conda:
        ENV
    script:
        "../../tasks/assemble_gram.py"


rule aggregate:
    input:
        data=dataset_store,
        train=f"{R}/train/{{experiment}}.json",
        gram=gram_manifest,
    output:
        store=directory(f"{R}/aggregate/{{experiment}}.zarr"),
    params:
        train_store=lambda wildcards: f"{R}/train/{wildcards.experiment}.zarr",
        gram_store=lambda wildcards: f"{R}/gram/{wildcards.experiment}.zarr",
    log:
        f"{R}/logs/aggregate/{{experiment}}.log",
    benchmark:
        f"{R}/benchmarks/aggregate/{{experiment}}.tsv"
    threads: 1
    resources:
        mem_mb=res("aggregate", "mem_mb"),
        runtime=res("aggregate", "runtime"),
    conda:
        ENV
    script:
        "../../tasks/aggregate.py"
