"""Rule train_grid: train one experiment's grid on Ray (tfconv.pipeline.steps.train_grid)."""
from tfconv.pipeline.steps import task_log, train_grid, workflow_of

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
with task_log(sm.log[0]):
    train_grid(workflow_of(sm), sm.wildcards.experiment, threads=sm.threads)
