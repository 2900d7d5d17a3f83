"""Rule train_grid: train one experiment's grid on Ray (tfconv.pipeline.train_grid)."""
from tfconv.config import load_config
from tfconv.pipeline import task_log, train_grid

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
with task_log(sm.log[0]):
    train_grid(load_config(dict(sm.config)), sm.wildcards.experiment, sm.input.data, sm.params.store,
               sm.output.manifest, threads=sm.threads)
