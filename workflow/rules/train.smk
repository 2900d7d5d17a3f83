# One job per experiment: a Ray driver trains every grid point (one Ray task each) into
# results/train/<experiment>.zarr; points already complete there are skipped. The manifest is
# written last and is what Snakemake tracks (the store itself is never deleted by a rerun).


rule train_grid:
    input:
        data=dataset_store,
    output:
        manifest=str(RES.train_manifest("{experiment}")),
    log:
        str(RES.log("train_grid", "{experiment}")),
    benchmark:
        str(RES.benchmark("train_grid", "{experiment}"))
    threads: cluster_threads("train_grid")
    resources:
        mem_mb=res("train_grid", "mem_mb"),
        runtime=res("train_grid", "runtime"),
        gpu=res("train_grid", "gpus"),
        # Multi-node Ray (ray.slurm_allocation, docs/slurm.md): the SLURM job gets `nodes` nodes and
        # one task per node with `threads` CPUs each; ray_slurm starts one Ray node per task.
        nodes=WF.resources("train_grid").get("nodes", 1),
        tasks=WF.resources("train_grid").get("nodes", 1),
        # GPU jobs: no --ntasks-per-gpu from the SLURM plugin (it would multiply the tasks).
        tasks_per_gpu=0,
    conda:
        ENV
    script:
        "../../tasks/train_grid.py"
