# Empirical NTK Gram matrices at every checkpoint, assembled block by block by Dask into Zarr.


rule assemble_gram:
    input:
        data=dataset_store,
        train=str(RES.train_manifest("{experiment}")),
    output:
        manifest=str(RES.gram_manifest("{experiment}")),
    log:
        str(RES.log("assemble_gram", "{experiment}")),
    benchmark:
        str(RES.benchmark("assemble_gram", "{experiment}"))
    threads: cluster_threads("assemble_gram")
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
        train=str(RES.train_manifest("{experiment}")),
        gram=gram_manifest,
    output:
        store=directory(str(RES.aggregate("{experiment}"))),
    log:
        str(RES.log("aggregate", "{experiment}")),
    benchmark:
        str(RES.benchmark("aggregate", "{experiment}"))
    threads: 1
    resources:
        mem_mb=res("aggregate", "mem_mb"),
        runtime=res("aggregate", "runtime"),
    conda:
        ENV
    script:
        "../../tasks/aggregate.py"
