"""The config schema (``schema.yaml``, shipped in this package): the one definition of every key, its
type, allowed values and default.

    load_schema()          # the JSON Schema the loader validates against (analyses enum filled in)
    analysis_defaults()    # the ``analysis:`` section's defaults
    grid_defaults()        # the value of a grid axis an experiment leaves out (AXIS_DEFAULTS)
    rule_resources()       # resources of a rule that neither resources.<rule> nor resources.default gives

The ``analyses`` enum is filled from the analysis registry's declared names
(`tfconv.registry.analysis_names`, stdlib data: no analysis module is imported).
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any, Dict

import yaml

SCHEMA_PATH = Path(__file__).resolve().parent / "schema.yaml"


@functools.lru_cache(maxsize=1)
def _schema_file() -> Dict[str, Any]:
    with open(SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


def schema_file() -> Dict[str, Any]:
    """``schema.yaml`` as written (its ``analyses`` enum empty); a fresh copy on every call."""
    return copy.deepcopy(_schema_file())


def load_schema() -> Dict[str, Any]:
    """The config schema, with the ``analyses`` enum filled from the analysis registry's declared names."""
    from ..registry import analysis_names

    schema = schema_file()
    schema["$defs"]["experiment"]["properties"]["analyses"]["items"]["enum"] = list(analysis_names())
    return schema


def analysis_defaults() -> Dict[str, Any]:
    """The ``analysis`` section's defaults: every key the section may hold, with its default."""
    props = _schema_file()["properties"]["analysis"]["properties"]
    return {k: copy.deepcopy(v.get("default")) for k, v in props.items()}


def grid_defaults() -> Dict[str, Any]:
    """{axis: value} of every grid axis whose schema default is one value (``scaling: [inv_sqrt]``, ...):
    the value of that axis in an experiment that does not list it."""
    props = _schema_file()["$defs"]["experiment"]["properties"]["grid"]["properties"]
    return {axis: copy.deepcopy(p["default"][0]) for axis, p in props.items()
            if isinstance(p.get("default"), list) and len(p["default"]) == 1}


def rule_resources() -> Dict[str, Any]:
    """The resources of a rule for every key that neither ``resources.<rule>`` nor
    ``resources.default`` gives (the ``default`` of ``$defs.rule_resources``; never written into a
    config, so a config without resources keeps the machine's memory as its budget)."""
    return copy.deepcopy(_schema_file()["$defs"]["rule_resources"]["default"])
