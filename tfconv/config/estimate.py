"""How big a configuration is, before any work: parameters per run, Gram bytes, runs.

    from tfconv.config.estimate import estimate, estimate_lines, size_problems
    est = estimate(cfg)                 # one entry per experiment (a validated config)
    print("\\n".join(estimate_lines(est)))

`estimate` is the one place that sizes a configuration; `tfconv validate` prints it, the workflow
prints it when the Snakefile is parsed (one line per experiment), and the loader refuses a config
whose single run or single Gram matrix cannot fit the memory budget (`size_problems`), with the
numbers, before Ray or Dask start.

Budgets: a training run must fit ``resources.train_grid.mem_mb`` and one Gram matrix (assembled in
Zarr block by block, then loaded whole for its float64 eigenvalues) ``resources.assemble_gram.mem_mb``
when the config gives them (or ``resources.default.mem_mb``); otherwise the physical memory of this
machine.
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

#: Bytes of one Gram entry (K is stored and decomposed in float64).
GRAM_ITEMSIZE = 8

#: Copies of the parameters one training run holds at once (parameters, gradients, a checkpoint).
PARAM_COPIES = 3


def dataset_dims(ds: Mapping[str, Any]) -> Tuple[int, int, int, int]:
    """(n_samples, d_s, d, n_outputs) of a validated dataset entry, without building it."""
    kind = ds["kind"]
    if kind == "mnist":
        p = int(ds.get("patch_size", 7))
        return int(ds["n_train"]), (28 // p) ** 2, p * p, len(ds.get("classes") or range(10))
    if kind == "text":
        return int(ds["n_samples"]), int(ds["d_s"]), int(ds["d"]), 1
    return int(ds["n_samples"]), int(ds["d_s"]), int(ds["d"]), int(ds.get("n_outputs", 1))


def n_params(width: int, d: int, d_s: int, n_outputs: int, hidden: bool = True, model: Optional[Mapping] = None) -> int:
    """Trainable parameters of one run (the shapes of `tfconv.core.model.ModelSpec.param_shapes`)."""
    model = model or {}
    embed = int(model.get("embed") or 0)
    e = embed or d
    n = 3 * width * e + width * n_outputs + (width * width if hidden else 0)
    n += embed * d if embed else 0
    n += d_s * e if model.get("positional") else 0
    n += e if model.get("class_token") else 0
    return n


def physical_memory() -> int:
    """Bytes of physical memory of this machine."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        import psutil

        return int(psutil.virtual_memory().total)


def memory_budget(cfg: Mapping[str, Any], rule: str) -> Tuple[int, str]:
    """(bytes, where the number comes from) that one job of `rule` may use."""
    res = cfg.get("resources") or {}
    for section in (rule, "default"):
        mem = (res.get(section) or {}).get("mem_mb")
        if mem:
            return int(mem) * 1024 * 1024, f"resources.{section}.mem_mb={int(mem)}"
    return physical_memory(), "the physical memory of this machine"


def estimate(cfg: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Per experiment of a validated config: runs, parameters of the widest run and their bytes,
    bytes of the largest Gram matrix, Gram matrices and their bytes in all (an upper bound: a run
    that diverges stores fewer checkpoints)."""
    out: Dict[str, Dict[str, Any]] = {}
    datasets = cfg["datasets"]
    for name, exp in cfg["experiments"].items():
        ds = datasets.get(exp["dataset"])
        if ds is None:
            continue
        n_total, d_s, d, n_out = dataset_dims(ds)
        grid = exp["grid"]
        tr = exp.get("train") or {}
        axes = {a: list(v) for a, v in grid.items()}
        runs = math.prod(len(v) for v in axes.values())
        itemsize = 8 if tr.get("dtype") == "float64" else 4
        width = max(int(w) for w in axes["width"])
        params = n_params(width, d, d_s, n_out, bool(tr.get("hidden", True)), exp.get("model"))
        ns = [int(n) for n in axes.get("n_samples", [n_total])]
        n_max = max(ns)
        epochs = len(tr.get("checkpoint_epochs") or [0]) if exp.get("gram", True) else 0
        other = runs // len(ns)  # runs per n_samples value
        gram_total = sum(n * n for n in ns) * GRAM_ITEMSIZE * other * epochs
        out[name] = {
            "runs": runs,
            "width": width,
            "params_per_run": params,
            "param_bytes_per_run": params * itemsize,
            "run_bytes": params * itemsize * PARAM_COPIES,
            "n_samples": n_max,
            "gram_bytes_per_matrix": n_max * n_max * GRAM_ITEMSIZE if epochs else 0,
            "grams": runs * epochs,
            "gram_bytes_total": gram_total,
        }
    return out


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1000.0
    return f"{n} B"  # pragma: no cover


def estimate_lines(est: Mapping[str, Mapping[str, Any]]) -> List[str]:
    """One line per experiment."""
    lines = []
    for name, e in est.items():
        gram = (f"Gram {human_bytes(e['gram_bytes_per_matrix'])} per matrix ({e['n_samples']} x {e['n_samples']}), "
                f"{e['grams']} matrices, {human_bytes(e['gram_bytes_total'])} in all") if e["grams"] else "no Gram matrices"
        lines.append(f"[size] {name}: {e['runs']} run{'' if e['runs'] == 1 else 's'}; {e['params_per_run']:,} parameters per run at width "
                     f"{e['width']} ({human_bytes(e['param_bytes_per_run'])}); {gram}")
    return lines


def size_problems(cfg: Mapping[str, Any], est: Optional[Mapping[str, Mapping[str, Any]]] = None) -> List[str]:
    """Why a single run or a single Gram matrix cannot fit its memory budget (empty when they fit)."""
    est = estimate(cfg) if est is None else est
    problems = []
    run_budget, run_src = memory_budget(cfg, "train_grid")
    gram_budget, gram_src = memory_budget(cfg, "assemble_gram")
    for name, e in est.items():
        key = f"experiments.{name}"
        if e["run_bytes"] > run_budget:
            problems.append(
                f"{key}.grid.width: a run at width {e['width']} has {e['params_per_run']:,} parameters, "
                f"{human_bytes(e['param_bytes_per_run'])} each copy and about {human_bytes(e['run_bytes'])} with "
                f"gradients and a checkpoint ({PARAM_COPIES} copies); the budget is {human_bytes(run_budget)} "
                f"({run_src}): use smaller widths or give train_grid more memory")
        if e["gram_bytes_per_matrix"] > gram_budget:
            problems.append(
                f"{key}: one {e['n_samples']} x {e['n_samples']} Gram matrix needs "
                f"{human_bytes(e['gram_bytes_per_matrix'])} (float64; it is loaded whole for its eigenvalues) and "
                f"{e['grams']} matrices need {human_bytes(e['gram_bytes_total'])}; the budget is "
                f"{human_bytes(gram_budget)} ({gram_src}): use fewer samples, `gram: false`, or give "
                "assemble_gram more memory")
    return problems
