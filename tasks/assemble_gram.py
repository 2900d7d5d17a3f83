"""Rule assemble_gram: Gram matrices of one experiment with Dask into Zarr (tfconv.pipeline.assemble_gram)."""
from tfconv.config import load_config
from tfconv.pipeline import assemble_gram, task_log

if __name__ == "__main__":  # a process-based dask LocalCluster needs the guard
    sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
    with task_log(sm.log[0]):
        assemble_gram(load_config(dict(sm.config)), sm.wildcards.experiment, sm.input.data,
                      sm.params.train_store, sm.params.store, sm.output.manifest)
