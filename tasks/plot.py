"""Rule plot: one analysis figure of one experiment (tfconv.pipeline.plot)."""
from tfconv.config import load_config
from tfconv.pipeline import plot, task_log

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
with task_log(sm.log[0]):
    plot(load_config(dict(sm.config)), sm.wildcards.experiment, sm.wildcards.analysis, sm.input.aggregate,
         sm.output.png, sm.output.csv, sm.output.slopes, sm.output.finding)
