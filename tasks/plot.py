"""Rule plot: one analysis figure of one experiment (tfconv.pipeline.steps.plot)."""
from tfconv.pipeline.steps import plot, task_log, workflow_of

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
with task_log(sm.log[0]):
    plot(workflow_of(sm), sm.wildcards.experiment, sm.wildcards.analysis)
