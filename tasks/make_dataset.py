"""Rule make_dataset: write one configured dataset to Zarr (tfconv.pipeline.simulate_data)."""
from tfconv.config import load_config
from tfconv.pipeline import simulate_data, task_log

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
with task_log(sm.log[0]):
    simulate_data(load_config(dict(sm.config)), sm.wildcards.dataset, sm.output.store)
