"""Rule aggregate: one labelled xarray dataset per experiment (tfconv.pipeline.aggregate)."""
from tfconv.config import load_config
from tfconv.pipeline import aggregate, task_log

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
with task_log(sm.log[0]):
    gram = sm.params.gram_store if sm.input.gram else None
    aggregate(load_config(dict(sm.config)), sm.wildcards.experiment, sm.input.data, sm.params.train_store,
              gram, sm.output.store)
