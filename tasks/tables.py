"""Rule tables: the claims table and the slopes table (tfconv.pipeline.tables)."""
import os

from tfconv.config import load_config
from tfconv.pipeline import task_log, tables

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
with task_log(sm.log[0]):
    aggregates = {os.path.basename(p)[: -len(".zarr")]: p for p in sm.input.aggregates}
    tables(load_config(dict(sm.config)), aggregates, list(sm.input.slopes), sm.output.claims, sm.output.slopes)
