# Each dataset is written once to Zarr, with its generator settings, seed and content hash.


rule make_dataset:
    output:
        store=directory(str(RES.data("{dataset}"))),
    log:
        str(RES.log("make_dataset", "{dataset}")),
    benchmark:
        str(RES.benchmark("make_dataset", "{dataset}"))
    threads: 1
    resources:
        mem_mb=res("make_dataset", "mem_mb"),
        runtime=res("make_dataset", "runtime"),
    conda:
        ENV
    script:
        "../../tasks/make_dataset.py"
