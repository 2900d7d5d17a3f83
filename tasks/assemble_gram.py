"""Rule assemble_gram: Gram matrices of one experiment with Dask into Zarr (tfconv.pipeline.steps.assemble_gram)."""
from tfconv.pipeline.steps import assemble_gram, task_log, workflow_of

if __name__ == "__main__":  # a process-based dask LocalCluster needs the guard
    sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
    with task_log(sm.log[0]):
        assemble_gram(workflow_of(sm), sm.wildcards.experiment, threads=sm.threads)
