"""Loading and validating the workflow configuration (once per job).

    load_config("config/config.yaml")     # read (yaml_io), validate, fill defaults, check: a dict
    load_workflow(path_or_dict)           # the same, typed (`Workflow`)
    merge_over_default(user, default, name="my")   # a --configfile over the embedded default (common.smk)
    load_user_config("my.yaml")           # what `snakemake --configfile my.yaml` runs: merged, validated

The JSON Schema ``tfconv/config/schema.yaml`` (`tfconv.config.schema`) is the one definition of
every key, its type, allowed values and default; the list of analyses comes from the analysis
registry's declared names.  `validate_config` validates against it, fills in the defaults and then
runs the checks a schema cannot express (`tfconv.config.checks`: cross references, epochs within
budget, ...).  Every error names the key (as a dotted path) and says what is allowed, before any
expensive work starts.  YAML files are read by `tfconv.config.yaml_io.read_yaml` only.
"""
from __future__ import annotations

import copy
import difflib
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from .checks import dotted, semantic_checks
from .errors import ConfigError
from .experiment import Workflow
from .schema import SCHEMA_PATH, analysis_defaults, load_schema
from .yaml_io import read_yaml

__all__ = ["SCHEMA_PATH", "analysis_settings", "load_config", "load_schema", "load_workflow", "load_user_config",
           "merge_over_default", "validate_config", "REPLACED_SECTIONS", "default_config_path", "config_name",
           "own_results_folder"]


def _default_filling_validator():
    import jsonschema

    base = jsonschema.Draft202012Validator
    # JSON Schema counts 5.0 as an integer; a config's integers are written as integers (5, not 5.0),
    # because the value reaches range(), numpy shapes and Ray options unchanged.
    checker = base.TYPE_CHECKER.redefine(
        "integer", lambda _checker, v: isinstance(v, int) and not isinstance(v, bool))

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": set_defaults}, type_checker=checker)


def _explain(err, schema: dict) -> str:
    """One clear line for a jsonschema error: the key, the problem, what is allowed."""
    where = dotted(err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = sorted((err.schema.get("properties") or {}).keys())
        unknown = sorted(set(err.instance) - set(allowed))
        hints = []
        for u in unknown:
            close = difflib.get_close_matches(str(u), allowed, n=1)
            hints.append(f"'{u}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        prefix = f"{where}." if err.absolute_path else ""
        return f"unknown key {', '.join(prefix + h for h in hints)}; allowed keys here: {', '.join(allowed)}"
    if err.validator == "enum":
        close = difflib.get_close_matches(str(err.instance), [str(v) for v in err.validator_value], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"{where}: {err.instance!r} is not allowed{hint}; allowed: {', '.join(map(str, err.validator_value))}"
    if err.validator == "anyOf" and err.absolute_path and "scaling" in [str(p) for p in err.absolute_path]:
        close = difflib.get_close_matches(str(err.instance), ["inv_sqrt", "inv"], n=1) if isinstance(err.instance, str) else []
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"{where}: {err.instance!r} is not allowed{hint}; allowed: inv_sqrt, inv or a positive number"
    if err.validator in ("minimum", "exclusiveMinimum"):
        rel = ">=" if err.validator == "minimum" else ">"
        return f"{where}: {err.instance!r} is not allowed; it must be {rel} {err.validator_value}"
    if err.validator == "minItems":
        return f"{where}: the list is empty or too short; it needs at least {err.validator_value} item(s)"
    if err.validator == "required":
        return f"{where}: {err.message}"
    if err.validator == "type":
        expected = err.validator_value
        if isinstance(err.instance, float) and "integer" in (expected if isinstance(expected, list) else [expected]):
            hint = f" (write {int(err.instance)}, not {err.instance!r})" if err.instance.is_integer() else ""
            return f"{where}: {err.instance!r} is not an integer{hint}; expected integer"
        return f"{where}: {err.instance!r} has the wrong type; expected {expected}"
    return f"{where}: {err.message}"


def validate_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """Validate a config dict against the schema, fill defaults, run semantic checks; return a new dict."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"the configuration must be a mapping of keys, got {type(config).__name__}")
    cfg = copy.deepcopy(dict(config))
    schema = load_schema()
    validator = _default_filling_validator()(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (len(list(e.absolute_path)), str(e.absolute_path)))
    if errors:
        # For if/then branches jsonschema reports the leaf errors; show every distinct one.
        lines = []
        for e in errors:
            leaves = [e] if not e.context else sorted(e.context, key=lambda c: -len(list(c.absolute_path)))[:1]
            if e.validator == "anyOf" and "scaling" in [str(x) for x in e.absolute_path]:
                leaves = [e]  # one message listing every allowed form (name or positive number)
            for leaf in leaves:
                msg = _explain(leaf, schema)
                if msg not in lines:
                    lines.append(msg)
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(lines))
    # Second pass: defaults inside if/then branches are filled only once the branch is chosen.
    validator.validate(cfg)
    semantic_checks(cfg)
    return cfg


def load_workflow(source: Union[str, os.PathLike, Mapping]) -> Workflow:
    """Read (a YAML file) or take (a dict) a config, validate it once and return it typed."""
    return Workflow.from_config(load_config(source))


def load_config(path: Union[str, os.PathLike, Mapping]) -> Dict[str, Any]:
    """Read a YAML file (or take a dict) and return the validated config with defaults filled in."""
    if isinstance(path, Mapping):
        return validate_config(path)
    p = Path(path)
    raw = read_yaml(p)
    if raw is None:
        raise ConfigError(f"config file {p} is empty; it needs at least `datasets` and `experiments`")
    try:
        return validate_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# The settings of the analyses (the config's ``analysis:`` section)
# ---------------------------------------------------------------------------------------------

def analysis_settings(settings: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The complete analysis settings: every key of the schema's ``analysis`` section with its
    default (`tfconv.config.schema.analysis_defaults`), overlaid with ``settings`` (the config's
    ``analysis`` section plus extra keys such as ``experiment``).

    The one source of these defaults: code that reads the settings takes them from here (or from a
    validated config, whose ``analysis`` section the loader fills the same way) and indexes them,
    ``settings["confidence"]``, never with a default of its own."""
    out = analysis_defaults()
    out.update(dict(settings or {}))
    return out


# ---------------------------------------------------------------------------------------------
# A user's --configfile over the embedded default
# ---------------------------------------------------------------------------------------------

#: Sections a user's config *replaces* rather than merges into the default (their own grid).
REPLACED_SECTIONS = ("experiments",)


def config_name(paths: Sequence[Union[str, os.PathLike]]) -> str:
    """The name of a run's config files: their stems joined by "+" ("my" for my.yaml)."""
    return "+".join(Path(p).stem for p in paths)


def own_results_folder(default_results: str, name: str) -> str:
    """Where a config without ``results:`` writes: ``<the default's results>-<name>`` (results-my for
    my.yaml), never the default run's folder."""
    return f"{default_results}-{name}"


def merge_over_default(user: Mapping[str, Any], default: Mapping[str, Any], name: Optional[str] = None) -> Dict[str, Any]:
    """The user's config merged over the default: every section is merged key by key (nested mappings
    recursively, the user's values win), except ``experiments``, which is the user's alone; datasets
    of the default stay available (unused ones are never built).  So ``--configfile my.yaml`` with only
    ``experiments`` and its ``datasets`` keeps the default's resources, Dask, Ray and analysis settings.

    A user config without ``results`` writes to its own folder, ``own_results_folder(default's, name)``
    (`name`: the config's, `config_name`), so that it never overwrites the default run's results; with
    no name it would share the default's folder, which is refused."""
    def merge(a, b):
        out = copy.deepcopy(dict(a))
        for k, v in b.items():
            out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else copy.deepcopy(v)
        return out

    merged = merge({k: v for k, v in default.items() if k not in REPLACED_SECTIONS}, user)
    for k in REPLACED_SECTIONS:
        if k in user:
            merged[k] = copy.deepcopy(user[k])
    if "results" not in user and "results" in default:
        if not name:
            raise ConfigError("a config merged over the default needs `results:` (a folder of its own) or a name "
                              "for its own results folder")
        merged["results"] = own_results_folder(str(default["results"]), name)
    return merged


def default_config_path() -> Path:
    """The embedded default config the workflow merges a --configfile over: config/config.yaml beside the
    Snakefile of this checkout (else ./config/config.yaml)."""
    for p in (Path(__file__).resolve().parents[2] / "config" / "config.yaml", Path.cwd() / "config" / "config.yaml"):
        if p.is_file():
            return p
    raise ConfigError("cannot find the default config (config/config.yaml beside the Snakefile) that a --configfile is "
                      "merged over; give it with --default PATH")


def load_user_config(path: Union[str, os.PathLike], default: Optional[Union[str, os.PathLike]] = None) -> Dict[str, Any]:
    """What ``snakemake --configfile PATH`` runs: the file read (`read_yaml`), merged over the default
    config exactly as workflow/rules/common.smk merges it (`merge_over_default`, results folder
    included), validated with defaults filled.  The default config itself is taken as it is."""
    p = Path(path)
    default_path = Path(default) if default is not None else default_config_path()
    raw = read_yaml(p)
    if raw is None:
        raise ConfigError(f"config file {p} is empty; it needs at least `datasets` and `experiments`")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{p}: the configuration must be a mapping of keys, got {type(raw).__name__}")
    if p.resolve() != default_path.resolve():
        raw = merge_over_default(raw, read_yaml(default_path), name=config_name([p]))
    try:
        return validate_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{p} (merged over {default_path}): {exc}") from None
