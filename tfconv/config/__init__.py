"""The workflow configuration: loaded and validated once per job, then typed.

    from tfconv.config import load_workflow
    wf = load_workflow("config/config.yaml")          # schema + semantic checks, defaults filled
    for point in wf.experiment("synthetic").points:   # GridPoint: run_id, spec(data), ...
        ...

`loader` reads YAML and validates it against ``schema.yaml`` (shipped here) and types it
(`load_workflow`); `experiment` holds the typed model (`Workflow`, `Experiment`, `GridPoint`, `DatasetSpec`) and the grid axes; `docs`
renders config/README.md from the schema.
"""
from .errors import ConfigError
from .experiment import AXIS_DEFAULTS, GRID_AXES, DatasetSpec, Experiment, GridPoint, Workflow, run_id
from .loader import SCHEMA_PATH, analysis_settings, load_config, load_schema, load_workflow, validate_config

__all__ = ["AXIS_DEFAULTS", "GRID_AXES", "DatasetSpec", "Experiment", "GridPoint", "Workflow", "run_id",
           "SCHEMA_PATH", "ConfigError", "analysis_settings", "load_config", "load_schema", "load_workflow",
           "validate_config"]
