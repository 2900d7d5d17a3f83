"""Rule aggregate: one labelled xarray dataset per experiment (tfconv.pipeline.steps.aggregate)."""
from tfconv.pipeline.steps import aggregate, task_log, workflow_of

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
with task_log(sm.log[0]):
    aggregate(workflow_of(sm), sm.wildcards.experiment)
