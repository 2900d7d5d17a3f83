#!/usr/bin/env python
"""Benchmarks of tfconv's heavy kernels, measured in one run on one machine.

    python benchmarks/bench_gram.py [--quick] [--only gram,flops] [--baseline-blocks K] [--json PATH]

Sections (append new ones to `SECTIONS`):
  gram       empirical-NTK Gram time and peak memory: structured engine vs the Jacobian-contraction
             method of PyTorch's NTK tutorial (vmap(jacrev) per-sample Jacobians, then contract),
             blocked so it fits memory; GFLOP/s of the structured engine vs a float32 matmul.
  flops      the structured engine's FLOP-count formula (`tfconv.ntk_structured.flop_count`).
  gd_epochs  GD epochs/s per grid point, vectorised over runs vs one run at a time.
  dask_gram  the N = 20,000 Gram assembled by Dask into Zarr: wall time, peak worker memory.

Every measurement of a method runs in a fresh subprocess (`--worker`), so the peak resident memory
(ru_maxrss) of one method never contaminates another's.  Timings use torch.set_num_threads(THREADS).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

THREADS = 2
D_S, D = 8, 32  # tokens per sample, features per token
INIT, SCALING, DTYPE = "lecun", "inv_sqrt", "float32"
SIZES = [(256, 1024), (1024, 1024), (1024, 2048), (2048, 1024), (4096, 1024)]  # (N, width)
QUICK_SIZES = [(64, 128), (256, 256), (256, 512)]
NT_BLOCK, NT_REPEATS = 256, 2  # neural-tangents baseline: samples per block, timed calls per kind of block
BASELINE_BLOCK = 128  # samples per Jacobian block of the baseline
MATMUL_N, QUICK_MATMUL_N = 4096, 2048
ENGINE_CHUNK, ENGINE_COL_CHUNK = 128, 512  # structured engine: rows / columns per pair GEMM

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing


# ----------------------------------------------------------------------------- problems & methods
def make_problem(N: int, width: int, seed: int = 0):
    import torch

    from tfconv.core.model import ModelSpec, init_params

    spec = ModelSpec(width=width, d=D, d_s=D_S, n_outputs=1, scaling=SCALING, init=INIT, dtype=DTYPE)
    params = init_params(spec, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    X = torch.randn(N, D_S, D, generator=gen, dtype=spec.torch_dtype)
    X = X / X.norm(dim=-1, keepdim=True)
    return spec, params, X


def tutorial_jacobians(params, X, scales):
    """Per-sample Jacobians as in PyTorch's NTK tutorial: vmap(jacrev(f_single)), flattened per param."""
    from torch.func import jacrev, vmap

    from tfconv.core.model import forward

    def f_single(p, x):
        return forward(p, x[None], scales)[0]  # (C,)

    jac = vmap(jacrev(f_single), (None, 0))(dict(params), X)
    return [j.flatten(2) for j in jac.values()]  # each (n, C, n_params_of_that_matrix)


def tutorial_contract(j1, j2):
    """The tutorial's `empirical_ntk_jacobian_contraction` with compute='trace': sum_p 'Naf,Maf->NM'."""
    import torch

    return torch.stack([torch.einsum("Naf,Maf->NM", a, b) for a, b in zip(j1, j2)]).sum(0)


def matmul_gflops(n: int, repeats: int = 3) -> float:
    """Best-of-`repeats` float32 GFLOP/s of an n x n @ n x n torch.matmul."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best / 1e9


# ----------------------------------------------------------------------------- a shared machine
QUIET_BUSY = 0.15  # "quiet": other processes use under 15% of all cores
QUIET_WAIT_S = 20.0  # the longest wait for a quiet machine before a timed segment


def busy_fraction(interval: float = 0.5) -> float:
    """Fraction of all cores busy over `interval` seconds (from /proc/stat; 0.0 where unavailable)."""
    def snap():
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:]]
        return sum(v), v[3] + (v[4] if len(v) > 4 else 0)  # total, idle + iowait

    try:
        t0, i0 = snap()
        time.sleep(interval)
        t1, i1 = snap()
    except OSError:
        return 0.0
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def wait_for_quiet(log: List[float], max_wait: float = QUIET_WAIT_S) -> None:
    """Before a timed segment: wait (up to max_wait s) until other processes leave the cores idle;
    append the busy fraction found to `log` so the report can say how quiet the runs were."""
    t_end = time.monotonic() + max_wait
    while True:
        b = busy_fraction()
        if b < QUIET_BUSY or time.monotonic() > t_end:
            log.append(b)
            return


# ----------------------------------------------------------------------------- subprocess workers
def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def worker(cfg: dict) -> dict:
    """One measurement in this (fresh) process; returns a JSON-able dict."""
    import numpy as np
    import torch

    torch.set_num_threads(THREADS)
    kind = cfg["kind"]
    if kind == "idle":  # interpreter + torch + one problem: the floor under every peak-memory number
        make_problem(cfg["N"], cfg["width"])
        return {"maxrss_mib": _maxrss_mib()}
    if kind == "matmul":
        return {"gflops": matmul_gflops(cfg["n"]), "maxrss_mib": _maxrss_mib()}
    spec, params, X = make_problem(cfg["N"], cfg["width"])
    if kind == "export":  # the problem for the neural-tangents baseline (another interpreter, no torch)
        np.savez(cfg["path"], X=X.numpy(), **{k: v.numpy() for k, v in params.items()}, **spec.scales())
        return {}
    if kind == "workflow":  # the workflow's own unit of work: tfconv.runner.gram_block, block by block
        return workflow_gram(cfg)
    if kind == "structured":
        from tfconv.core.ntk_structured import choose_forms, flop_count, ntk_block_structured

        busy: List[float] = []
        wait_for_quiet(busy)
        mm = [matmul_gflops(cfg["matmul_n"], repeats=2)]  # same conditions as the engine, just before
        # one first call (fresh process, fresh factor workspace), then the timed calls back to back, as a
        # Gram worker runs its blocks and as neural-tangents' timed calls follow its compiling call
        t = time.perf_counter()
        ntk_block_structured(params, spec, X, chunk_size=ENGINE_CHUNK, col_chunk_size=ENGINE_COL_CHUNK)
        first = time.perf_counter() - t
        times = []
        for _ in range(cfg["repeats"]):
            t = time.perf_counter()
            K = ntk_block_structured(params, spec, X, chunk_size=ENGINE_CHUNK, col_chunk_size=ENGINE_COL_CHUNK)
            times.append(time.perf_counter() - t)
        wait_for_quiet(busy)
        mm.append(matmul_gflops(cfg["matmul_n"], repeats=2))  # ... and just after
        if cfg.get("save_block"):  # the first block, to compare with the neural-tangents baseline
            np.save(cfg["save_block"], K[:cfg["block"], :cfg["block"]])
        fl = flop_count(spec, cfg["N"], None, chunk_size=ENGINE_CHUNK, col_chunk_size=ENGINE_COL_CHUNK)
        return {
            "time_s": min(times), "times_s": times, "first_call_s": first, "flops": fl["total"],
            "forms": choose_forms(spec),
            "matmul_gflops": max(mm), "maxrss_mib": _maxrss_mib(), "checksum": float(np.trace(K)),
            "busy_before": busy,
        }
    if kind == "baseline":
        N, b = cfg["N"], BASELINE_BLOCK
        scales = spec.scales()
        starts = list(range(0, N, b))
        n_rb = len(starts)
        n_blocks = n_rb * n_rb
        max_blocks = cfg["max_blocks"] or n_blocks
        t_rowjac, t_block, done, busy = [], [], 0, []
        K = np.empty((N, N))
        with torch.no_grad():
            for r0 in starts:
                wait_for_quiet(busy)  # waits are outside the timed segments
                t = time.perf_counter()
                Jr = tutorial_jacobians(params, X[r0:r0 + b], scales)
                t_rowjac.append(time.perf_counter() - t)
                for c0 in starts:
                    if done >= max_blocks:
                        break
                    wait_for_quiet(busy)
                    t = time.perf_counter()
                    Jc = tutorial_jacobians(params, X[c0:c0 + b], scales)
                    K[r0:r0 + b, c0:c0 + b] = (tutorial_contract(Jr, Jc) / spec.n_outputs).numpy()
                    del Jc
                    t_block.append(time.perf_counter() - t)
                    done += 1
                del Jr
                if done >= max_blocks:
                    break
        # full run = one row-Jacobian per row block + (column Jacobian + contraction) per block
        if done == n_blocks:
            total = sum(t_rowjac) + sum(t_block)
        else:
            total = n_rb * float(np.median(t_rowjac)) + n_blocks * float(np.median(t_block))
        P = spec.n_params()
        return {
            "time_s": total, "blocks_timed": done, "blocks_total": n_blocks,
            "extrapolated": done < n_blocks, "n_params": P, "maxrss_mib": _maxrss_mib(),
            "checksum": float(np.trace(K[:b, :b])), "busy_before": busy,
        }
    raise ValueError(f"unknown worker kind {kind!r}")


def workflow_gram(cfg: dict) -> dict:
    """The Gram as the workflow computes it: every upper block of `block` samples through
    `tfconv.runner.gram_block` (reads the dataset and the checkpoint from their stores, runs the engine
    on the block's rows and columns, writes K and the block's marker into Zarr), one block after the
    other in this process, as one Dask worker does.  Best of `repeats` assemblies, each into a new store."""
    import tempfile

    import numpy as np
    import torch

    from bench_pipeline import gram_stores

    from tfconv import runner, store

    N, B = cfg["N"], min(cfg["block"], cfg["N"])
    wd = Path(tempfile.mkdtemp(prefix="tfconv-bench-wf-"))
    # synthetic data of the same shape (the time does not depend on it), one run's epoch-0 checkpoint
    exp, point, data_store, train_store = gram_stores(wd, N, cfg["width"], SCALING, INIT, DTYPE)
    blocks = store.upper_blocks(N, B)
    busy, times = [], []
    settings = runner.GramSettings(block_size=B, chunk_size=ENGINE_CHUNK, threads=THREADS)
    for rep in range(cfg["repeats"]):
        gs = wd / f"gram{rep}.zarr"
        store.ensure_gram(gs, point.run_id, 0, N, B)
        job = runner.GramJob(exp, str(data_store), str(train_store), str(gs), settings)
        wait_for_quiet(busy)
        t = time.perf_counter()
        for bi, bj in blocks:
            runner.gram_block(job, point, 0, bi, bj)
        times.append(time.perf_counter() - t)
    K = np.asarray(store.open_gram(gs, point.run_id, 0, mode="r")["K"][:min(NT_BLOCK, N), :min(NT_BLOCK, N)])
    shutil.rmtree(wd, ignore_errors=True)
    return {"time_s": min(times), "times_s": times, "block": B, "blocks": len(blocks), "busy_before": busy,
            "maxrss_mib": _maxrss_mib(), "checksum": float(np.trace(K)), "torch_threads": torch.get_num_threads()}


def run_worker(cfg: dict, timeout: Optional[float] = None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(cfg)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"worker {cfg} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_nt(nt_python: str, N: int, width: int, tmp: str, timeout: Optional[float] = None) -> dict:
    """neural-tangents' structured-derivatives NTK on the same problem (benchmarks/nt_baseline.py in
    the interpreter `nt_python`); adds "max_rel_diff": max|K_nt - K_tfconv| / max|K_tfconv| on the first
    block (the structured worker saved its block to tmp/tfconv_block.npy)."""
    import numpy as np

    prob, out = os.path.join(tmp, "problem.npz"), os.path.join(tmp, "nt_block.npy")
    run_worker({"kind": "export", "N": N, "width": width, "path": prob})
    wait_for_quiet([])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    cmd = [nt_python, str(Path(__file__).with_name("nt_baseline.py")), prob, out, str(NT_BLOCK),
           str(NT_REPEATS), "STRUCTURED_DERIVATIVES"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"neural-tangents baseline failed ({' '.join(cmd)}):\n{res.stderr[-3000:]}")
    r = json.loads(res.stdout.strip().splitlines()[-1])
    Kn, Kt = np.load(out), np.load(os.path.join(tmp, "tfconv_block.npy"))
    r["max_rel_diff"] = float(np.abs(Kn - Kt).max() / np.abs(Kt).max())
    return r


# ----------------------------------------------------------------------------- sections
@dataclass
class Table:
    title: str
    columns: List[str]
    rows: List[List[str]]
    notes: List[str]

    def render(self) -> str:
        widths = [max(len(c), *(len(r[i]) for r in self.rows)) if self.rows else len(c)
                  for i, c in enumerate(self.columns)]
        line = lambda cells: "| " + " | ".join(s.ljust(w) for s, w in zip(cells, widths)) + " |"  # noqa: E731
        out = [f"## {self.title}", "", line(self.columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        out += [line(r) for r in self.rows]
        out += [""] + [n if n.startswith("```") else f"- {n}" for n in self.notes]
        return "\n".join(out)


def _sizes(args):
    if args.sizes:
        return [tuple(int(v) for v in x.split("x")) for x in args.sizes.split(",")]
    return QUICK_SIZES if args.quick else SIZES


def section_gram(args) -> Table:
    import tempfile

    sizes = _sizes(args)
    mm_n = QUICK_MATMUL_N if args.quick else MATMUL_N
    idle = run_worker({"kind": "idle", "N": sizes[0][0], "width": sizes[0][1]})["maxrss_mib"]
    mm_alone = run_worker({"kind": "matmul", "n": mm_n})["gflops"]
    nt_py = args.nt_python
    rows, raw = [], []
    for N, width in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            s = run_worker({"kind": "structured", "N": N, "width": width, "repeats": args.repeats, "matmul_n": mm_n,
                            "save_block": os.path.join(tmp, "tfconv_block.npy"), "block": min(NT_BLOCK, N)})
            nt = run_nt(nt_py, N, width, tmp) if nt_py else None
        wf = run_worker({"kind": "workflow", "N": N, "width": width, "block": args.workflow_block, "repeats": 2})
        b = None
        if args.baseline_blocks >= 0:
            n_rb = -(-N // BASELINE_BLOCK)
            max_blocks = 0 if (args.baseline_blocks == 0 or n_rb * n_rb <= 4) else args.baseline_blocks
            b = run_worker({"kind": "baseline", "N": N, "width": width, "max_blocks": max_blocks})
        gf = s["flops"] / s["time_s"] / 1e9
        row = [f"{N}", f"{width}", f"{spec_params(N, width):,}", f"{s['time_s']:.3g}", f"{wf['time_s']:.3g} ({wf['blocks']})"]
        if nt:
            row += [f"{nt['time_s']:.3g}" + (" (x)" if nt["extrapolated"] else ""),
                    f"{s['time_s'] / nt['time_s']:.3f}", f"{wf['time_s'] / nt['time_s']:.3f}",
                    f"{nt['maxrss_mib']:.0f}", f"{nt['max_rel_diff']:.1e}"]
        if b:
            base_txt = f"{b['time_s']:.1f}" + (" (x)" if b["extrapolated"] else "")
            row += [base_txt, f"{s['time_s'] / b['time_s']:.3f}", f"{b['maxrss_mib']:.0f}"]
        row += [f"{s['maxrss_mib']:.0f}", f"{gf:.0f}", f"{s['matmul_gflops']:.0f}", f"{gf / s['matmul_gflops']:.2f}"]
        rows.append(row)
        raw.append({"N": N, "width": width, "structured": s, "workflow": wf, "baseline": b, "neural_tangents": nt})
        print("  " + " | ".join(row), flush=True)
    busy = [x for r in raw for m in ("structured", "workflow", "baseline") if r[m] for x in r[m]["busy_before"]]
    max_busy = max(busy or [0.0])
    args.raw["gram"] = {"rows": raw, "idle_maxrss_mib": idle, "matmul_alone_gflops": mm_alone}
    columns = ["N", "width", "n_params", "tfconv s", "workflow s (blocks)"]
    if nt_py:
        columns += ["NT s", "tfconv/NT", "workflow/NT", "NT peak MiB", "K diff vs NT"]
    if args.baseline_blocks >= 0:
        columns += ["JC s", "tfconv/JC", "JC peak MiB"]
    columns += ["tfconv peak MiB", "tfconv GF/s", "matmul GF/s", "GF/s ratio"]
    notes = [
        f"d_s={D_S}, d={D}, init={INIT}, scaling={SCALING}, {DTYPE}, C=1, hidden layer on; "
        f"{THREADS} threads for every method; best of {args.repeats} runs for tfconv.",
        f"tfconv: tfconv.core.ntk_structured.ntk_block_structured(X_cols=None, chunk_size={ENGINE_CHUNK}, "
        f"col_chunk_size={ENGINE_COL_CHUNK}); forms {raw[0]['structured']['forms']}; upper-triangle chunk pairs "
        "only; after one untimed first call, the best of R calls run back to back (each reuses the factor workspace of "
        "the call before, as a Gram worker does "
        f"from block to block); first calls (fresh process and workspace, not counted) " + ", ".join(f"{r['structured']['first_call_s']:.3g}" for r in raw) + " s.",
    ]
    notes.append(
        f"workflow: the same Gram as the workflow assembles it, every upper block of min(N, {args.workflow_block}) "
        "samples through tfconv.runner.gram_block (dataset and checkpoint read from their Zarr stores, the engine on "
        "the block's rows and columns, K and the block marker written to a Zarr store), one block after the other "
        "in one process as one Dask worker runs them; best of 2 assemblies; (k): upper blocks. Each block computes "
        "the per-sample factors of its rows and its columns, so small blocks repeat that work (gram.block_size).")
    if nt_py:
        nt0 = next(r["neural_tangents"] for r in raw)
        notes.append(
            f"NT: neural-tangents {nt0['neural_tangents']} (jax {nt0['jax']}, {nt0['devices']}), "
            "empirical_ntk_fn(implementation=STRUCTURED_DERIVATIVES, vmap_axes=0, trace_axes=(-1,)), jitted, float32, "
            f"the same weights and inputs (benchmarks/nt_baseline.py). Blocks of {NT_BLOCK} samples as nt.batch computes "
            f"them (every block; neural-tangents does not skip the lower triangle); best of {NT_REPEATS} calls after an "
            "untimed compiling call, per kind of block (diagonal: kfn(X_b, None); off-diagonal: kfn(X_a, X_b)). "
            f"(x): N > {NT_BLOCK}, total = n_b t_diag + n_b (n_b - 1) t_off from the two measured block kinds. "
            "Compile times (diagonal, off-diagonal) s: "
            + "; ".join(f"{r['N']}x{r['width']}: {r['neural_tangents']['first_call_s'][0]:.1f}, "
                        f"{r['neural_tangents']['first_call_s'][1]:.1f}" for r in raw)
            + ". K diff vs NT: max|K_NT - K_tfconv| / max|K_tfconv| on the first block.")
    else:
        notes.append("NT: not run (give --nt-python PY, an interpreter with jax and neural-tangents; "
                     "see benchmarks/README.md); the ratio is against the Jacobian-contraction baseline only.")
    if args.baseline_blocks >= 0:
        notes.append(
            f"JC: PyTorch NTK tutorial (vmap(jacrev) per-sample Jacobians, 'Naf,Maf->NM' contraction) in "
            f"{DTYPE}, blocks of {BASELINE_BLOCK} samples, row-block Jacobians reused across the column loop, "
            "every block of the full N x N matrix. (x): the first k blocks were timed and the total is "
            "n_row_blocks*median(row-Jacobian) + n*median(block).")
    notes += [
        "peak MiB: ru_maxrss of a fresh subprocess per method and size (extrapolated baselines: the blocks "
        f"that ran). Interpreter + torch + data alone: {idle:.0f} MiB.",
        "GF/s: flop_count(...) / time (see the flops section); matmul GF/s: best float32 "
        f"{mm_n}x{mm_n}@{mm_n}x{mm_n} torch.matmul measured in the same subprocess just before and after "
        f"tfconv (alone in its own subprocess: {mm_alone:.0f} GF/s).",
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"load average at start {args.load0[0]:.2f}, now {os.getloadavg()[0]:.2f}. Before each timed segment "
        f"the worker waits up to {QUIET_WAIT_S:.0f} s for other processes to use < {QUIET_BUSY:.0%} of the cores; "
        f"the busiest start found was {max_busy:.0%}.",
    ]
    return Table("Empirical NTK Gram: tfconv's structured engine vs neural-tangents and Jacobian contraction",
                 columns, rows, notes)


def spec_params(N: int, width: int) -> int:
    return 3 * width * D + width * width + width  # Wq, Wk, Wv, Wh, wo (C = 1)


def section_flops(args) -> Table:
    from tfconv.core.model import ModelSpec
    from tfconv.core.ntk_structured import flop_count

    sizes = _sizes(args)
    rows = []
    for N, width in sizes:
        spec = ModelSpec(width=width, d=D, d_s=D_S, scaling=SCALING, init=INIT, dtype=DTYPE)
        f = flop_count(spec, N, None, chunk_size=ENGINE_CHUNK, col_chunk_size=ENGINE_COL_CHUNK)
        P = spec.n_params()
        rows.append([f"{N}", f"{width}", f"{f['per_sample'] / 1e6:.1f}", f"{f['per_pair'] / 1e6:.3f}",
                     f"{f['n_pairs']:.3g}", f"{f['total'] / 1e9:.1f}", f"{2.0 * N * N * P / 1e9:.0f}"])
    doc = flop_count.__doc__.split("Formula", 1)[1].split("\n", 1)[1].rstrip()
    notes = ["structured FLOPs = per_sample * N + per_pair * n_pairs, 2 FLOPs per multiply-add "
             "(w = width, C = n_outputs, [x] = when form x is chosen):", "```" + doc + "\n```",
             "baseline contraction alone = 2 N^2 n_params FLOPs (plus the per-sample Jacobians)."]
    return Table("Structured-engine FLOP count (d_s=8, d=32, C=1)",
                 ["N", "width", "per sample MFLOP", "per pair MFLOP", "pairs computed",
                  "structured GFLOP", "baseline contraction GFLOP"], rows, notes)


def _pipeline_section(name: str, extra: List[str]) -> dict:
    """Run one section of benchmarks/bench_pipeline.py in a fresh subprocess (its LocalCluster needs a
    main guard, and a fresh process keeps peak-memory numbers clean); returns its JSON results."""
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".json") as fh:
        cmd = [sys.executable, str(Path(__file__).with_name("bench_pipeline.py")), "--section", name,
               "--json", fh.name, *extra]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL if name == "train" else None)
        return json.loads(Path(fh.name).read_text())[name]


def section_gd_epochs(args) -> Optional[Table]:
    """GD epochs/s per grid point: all 6 runs of one width (2 scalings x 3 inits) trained in one
    vectorised computation (`tfconv.core.train_vectorised`) vs one `train_gd` call per run, same thread."""
    rows = _pipeline_section("train", ["--quick"] if args.quick else [])
    args.raw["gd_epochs"] = rows
    return Table(
        "GD training throughput: epochs/s per grid point (N=100, d_s=8, d=32, float32, 1 thread)",
        ["width", "runs", "epochs", "one run per task", "vectorised", "speed-up"],
        [[str(r["width"]), str(r["runs"]), str(r["epochs"]), f"{r['epochs_per_s_per_point_loop']:.1f}",
          f"{r['epochs_per_s_per_point_vectorised']:.1f}", f"{r['speedup']:.2f}x"] for r in rows],
        ["speed-up = time of 6 sequential train_gd runs / time of one train_gd_vectorised call of the same 6"],
    )


def section_dask_gram(args) -> Optional[Table]:
    """The N x N Gram (N = 20,000; 2,000 with --quick) of one checkpoint assembled by a dask
    LocalCluster of 2 worker processes (3 GB limit each) into Zarr: wall time, peak worker memory."""
    r = _pipeline_section("gram20k", ["--quick"] if args.quick else [])
    args.raw["dask_gram"] = r
    return Table(
        f"Out-of-core Gram through Dask into Zarr (N={r['n']}, width {r['width']}, LeCun, inv_sqrt, float32)",
        ["N", "blocks", "workers", "wall s", "blocks s", "eigenvalues s", "peak worker MiB", "cap", "driver peak MiB"],
        [[str(r["n"]), f"{r['blocks']} of {r['block_size']}x{r['block_size']}", str(r["workers"]),
          f"{r['wall_s']:.0f}", f"{r['blocks_s']:.0f}", f"{r['eigenvalues_s']:.0f}",
          f"{r['peak_worker_rss_mb']:.0f}", r["memory_limit"], f"{r['driver_peak_rss_mb']:.0f}"]],
        ["peak worker memory = max over workers of getrusage(RUSAGE_SELF).ru_maxrss after the assembly",
         "float64 eigenvalues are computed on the driver (Dask has no symmetric eigensolver)"],
    )


@dataclass
class Section:
    name: str
    run: Callable[[argparse.Namespace], Optional[Table]]


#: Benchmark sections in print order; append new ones here.
SECTIONS: List[Section] = [
    Section("gram", section_gram),
    Section("flops", section_flops),
    Section("gd_epochs", section_gd_epochs),
    Section("dask_gram", section_dask_gram),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (about a minute), for CI and smoke tests")
    ap.add_argument("--only", default="", help="comma-separated section names (default: all)")
    ap.add_argument("--repeats", type=int, default=3, help="structured-engine runs per size (best is reported)")
    ap.add_argument("--baseline-blocks", type=int, default=3,
                    help="Jacobian-contraction baseline blocks to time before extrapolating (0: run every block, "
                         "-1: skip this baseline)")
    ap.add_argument("--nt-python", default=os.environ.get("TFCONV_NT_PYTHON", ""),
                    help="an interpreter with jax + neural-tangents for the neural-tangents baseline "
                         "(default: $TFCONV_NT_PYTHON; empty: skip it)")
    ap.add_argument("--workflow-block", type=int, default=1024,
                    help="gram.block_size of the workflow column (default 1024)")
    ap.add_argument("--sizes", default="", help="comma-separated NxWIDTH, e.g. 256x1024,4096x1024")
    ap.add_argument("--json", default="", help="also write the raw measurements to this JSON file")
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    args.load0 = os.getloadavg()
    args.raw: Dict[str, object] = {}
    wanted = {s for s in args.only.split(",") if s}
    unknown = wanted - {s.name for s in SECTIONS}
    if unknown:
        ap.error(f"unknown section(s) {sorted(unknown)}; known: {[s.name for s in SECTIONS]}")
    print(f"# tfconv benchmarks ({'quick' if args.quick else 'full'}), {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    for sec in SECTIONS:
        if wanted and sec.name not in wanted:
            continue
        t0 = time.perf_counter()
        table = sec.run(args)
        if table is None:
            print(f"## {sec.name}: not implemented yet (hook in benchmarks/bench_gram.py)\n")
            continue
        print(table.render())
        print(f"\n({sec.name}: {time.perf_counter() - t0:.0f} s)\n", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(args.raw, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
