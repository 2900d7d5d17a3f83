"""The workflow configuration: loaded and validated once per job, then typed.

    from tfconv.config import load_workflow
    wf = load_workflow("config/config.yaml")          # schema + semantic checks, defaults filled
    for point in wf.experiment("synthetic").points:   # GridPoint: run_id, spec(data), ...
        ...

Modules: `schema` (``schema.yaml``, shipped here: every key, its type and default, and the defaults
derived from it: analysis settings, grid axes, rule resources); `yaml_io` (the one reader of YAML
files: duplicate keys, alias bombs, binary files refused); `checks` (what a schema cannot express:
cross references, addresses, memory strings, sizes); `loader` (validate against the schema, fill
defaults, run the checks; `load_config`, `load_workflow`, `analysis_settings`, the --configfile
merge); `experiment` (the typed model: `Workflow`, `Experiment`, `GridPoint`, `DatasetSpec`, the grid
axes); `estimate` (sizes and memory budgets); `docs` (renders config/README.md from the schema).
"""
from .errors import ConfigError
from .experiment import AXIS_DEFAULTS, GRID_AXES, DatasetSpec, Experiment, GridPoint, Workflow, run_id
from .loader import analysis_settings, load_config, load_workflow, validate_config
from .schema import SCHEMA_PATH, load_schema

__all__ = ["AXIS_DEFAULTS", "GRID_AXES", "DatasetSpec", "Experiment", "GridPoint", "Workflow", "run_id",
           "SCHEMA_PATH", "ConfigError", "analysis_settings", "load_config", "load_schema", "load_workflow",
           "validate_config"]
