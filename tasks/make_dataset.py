"""Rule make_dataset: write one configured dataset to Zarr (tfconv.pipeline.steps.make_dataset)."""
from tfconv.pipeline.steps import make_dataset, task_log, workflow_of

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
with task_log(sm.log[0]):
    make_dataset(workflow_of(sm), sm.wildcards.dataset)
