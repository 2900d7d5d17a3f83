"""Rule tables: the claims table and the slopes table (tfconv.pipeline.steps.tables)."""
from tfconv.pipeline.steps import task_log, tables, workflow_of

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
with task_log(sm.log[0]):
    tables(workflow_of(sm))
