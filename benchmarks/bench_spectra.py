"""Gram -> lambda_min, lambda_max at large N without a dense decomposition, against today's dense path.

    python benchmarks/bench_spectra.py --n 20000 --compare-dense     # ~10 min on 2 cores
    python benchmarks/bench_spectra.py --n 50000                     # ~20 min, ~20 GB of K on disk
    python benchmarks/bench_spectra.py --n 20000 --engine-width 256 --compare-dense
                                      # NTK blocks from the engine: ~32 min (the shift-invert on that
                                      # near-singular float32 NTK runs to its 300-solve cap, 20 min)

What runs (one fresh Dask LocalCluster per N: 2 worker processes x 1 thread, 3 GB each):

1. **blocks**: K is assembled into a Zarr Gram store by the workflow's store code (`store.ensure_gram`,
   `store.write_block`: the real chunk layout, digests and ``blocks_done``), one Dask task per upper
   block.  The blocks are a *synthetic* NTK-like PSD kernel, not the NTK engine (the engine needs
   ~10 min of block work at N = 50,000 on 2 cores): ``K = J J^T / r + c 11^T + ridge I`` with J
   (N x r) Gaussian, regenerated per block row from a seed, so no process ever holds J or K whole.
   It has an outlier ~ c N like a mean-output NTK, a Marchenko-Pastur bulk, and, because r + 1 < N,
   lambda_min = ridge exactly (a degenerate bottom eigenvalue: the shift-invert iteration converges
   faster here than on a real NTK whose bottom edge is a continuum; the factorisations cost the same).
   With ``--engine-width W`` the blocks are the real thing instead: the empirical NTK at
   initialisation of a width-W model (LeCun, tau0 = d^-1/2, float32) from the structured engine, on
   Gaussian tokens of norm sqrt(d) regenerated per block from the seed (`engine_block`).
2. **spectra**: `tfconv.cluster.dask_spectra.gram_spectrum` as the workflow runs it above
   ``gram.spectrum_dense_max``: Lanczos for lambda_max (one streamed pass over K per product),
   out-of-core Cholesky (tiles of ``--tile`` rows) and shift-invert Lanczos for lambda_min, its
   residual, and the Cholesky certificate at lambda_min (1 -/+ rtol).
3. **dense** (``--compare-dense``): today's path in a fresh subprocess: `store.assembled_matrix` (K whole)
   and `tfconv.core.ntk.gram_eigenvalues` (float64 eigvalsh of 0.5 (K + K^T)).

Peak memory is each process's VmHWM (peak resident set, /proc/<pid>/status): the driver, the
scheduler and every worker (reset after the blocks, so the spectra's peak is its own), and the dense
subprocess.  Output: tables on stdout and ``--json``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402

#: The environment before any Dask cluster starts: distributed sets OMP/MKL/OPENBLAS_NUM_THREADS=1 in
#: this process when it spawns workers, and the dense baseline must get the BLAS threads today's
#: path has (its process imported numpy before the cluster started).
ENV0 = dict(os.environ)


def vmhwm_mb(pid: str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def reset_vmhwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def synthetic_block(gram_store: str, n: int, block: int, bi: int, bj: int, rank: int, c: float, ridge: float,
                    seed: int) -> int:
    """Block (bi, bj) of J J^T / r + c 11^T + ridge I, written by the workflow's store code."""
    from tfconv import store

    ranges = store.block_ranges(n, block)
    (r0, r1), (c0, c1) = ranges[bi], ranges[bj]
    Ji = np.random.default_rng([seed, bi]).standard_normal((r1 - r0, rank))
    Jj = Ji if bi == bj else np.random.default_rng([seed, bj]).standard_normal((c1 - c0, rank))
    B = Ji @ Jj.T / rank + c
    if bi == bj:
        B[np.diag_indices_from(B)] += ridge
        B = 0.5 * (B + B.T)
    g = store.open_gram(gram_store, "synthetic", 0)
    store.write_block(g, bi, bj, B, block)
    return bi * 100000 + bj


def engine_tokens(n0: int, n1: int, seed: int) -> np.ndarray:
    """Samples n0..n1 of the engine mode's data: d_s = 8 Gaussian tokens of d = 32 features, each of norm
    sqrt(d) (the synthetic data's regime), regenerated per sample range from the seed."""
    X = np.random.default_rng([seed, 7, n0]).standard_normal((n1 - n0, 8, 32))
    return X * (np.sqrt(32) / np.linalg.norm(X, axis=-1, keepdims=True))


def engine_block(gram_store: str, n: int, block: int, bi: int, bj: int, width: int, seed: int) -> int:
    """Block (bi, bj) of the empirical NTK at initialisation (LeCun, tau0 = d^-1/2, float32) from the
    structured engine, written by the workflow's store code: the whole Gram -> spectra path."""
    import torch

    from tfconv import store
    from tfconv.core.model import ModelSpec, init_params
    from tfconv.core.ntk_structured import ntk_block_structured

    torch.set_num_threads(1)
    spec = ModelSpec(width=width, d=32, d_s=8, scaling="inv_sqrt", init="lecun", dtype="float32")
    params = init_params(spec, seed)
    ranges = store.block_ranges(n, block)
    (r0, r1), (c0, c1) = ranges[bi], ranges[bj]
    Xi = engine_tokens(r0, r1, seed)
    B = ntk_block_structured(params, spec, Xi, None if bi == bj else engine_tokens(c0, c1, seed), chunk_size=250)
    g = store.open_gram(gram_store, "synthetic", 0)
    store.write_block(g, bi, bj, B, block)
    return bi * 100000 + bj


def assemble(client, gram_store: str, n: int, block: int, rank: int, c: float, ridge: float, seed: int,
             engine_width: int = 0) -> float:
    from distributed import as_completed

    from tfconv import store

    t0 = time.perf_counter()
    attrs = {"engine": dict(width=engine_width, seed=seed)} if engine_width else \
        {"synthetic": dict(rank=rank, c=c, ridge=ridge, seed=seed)}
    store.ensure_gram(gram_store, "synthetic", 0, n, block, attrs=attrs)
    todo = iter(store.upper_blocks(n, block))

    def submit(ij):
        if engine_width:
            return client.submit(engine_block, gram_store, n, block, *ij, engine_width, seed, pure=False)
        return client.submit(synthetic_block, gram_store, n, block, *ij, rank, c, ridge, seed, pure=False)

    ac = as_completed()
    for _ in range(64):
        ij = next(todo, None)
        if ij is None:
            break
        ac.add(submit(ij))
    done, total, t_log = 0, len(store.upper_blocks(n, block)), time.perf_counter()
    for f in ac:
        f.result()
        f.release()
        done += 1
        ij = next(todo, None)
        if ij is not None:
            ac.add(submit(ij))
        if time.perf_counter() - t_log > 30:
            t_log = time.perf_counter()
            print(f"  blocks {done}/{total} ({t_log - t0:.0f} s)", flush=True)
    return time.perf_counter() - t0


DENSE_SCRIPT = r"""
import json, sys, time
sys.path.insert(0, {root!r})
t0 = time.perf_counter()
from tfconv import store
from tfconv.core.ntk import gram_eigenvalues
g = store.open_gram({gs!r}, "synthetic", 0, mode="r")
K = store.assembled_matrix(g)
t1 = time.perf_counter()
ev = gram_eigenvalues(K)
t2 = time.perf_counter()
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({{"read_s": t1 - t0, "eigvalsh_s": t2 - t1, "total_s": t2 - t0, "peak_mb": int(hwm) / 1024,
                  "lambda_min": float(ev[0]), "lambda_max": float(ev[-1])}}))
"""


def du_gb(path: str) -> float:
    tot = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                tot += os.stat(os.path.join(root, f)).st_blocks * 512
            except OSError:
                pass
    return tot / 1e9


def run_one(args, n: int) -> dict:
    from distributed import Client, LocalCluster

    from tfconv import store
    from tfconv.cluster.dask_spectra import SpectrumSettings, gram_spectrum

    gs = os.path.join(args.out, f"gram-{n}.zarr")
    shutil.rmtree(gs, ignore_errors=True)
    need = n * n * 8 * 1.6 / 1e9
    free = shutil.disk_usage(args.out).free / 1e9
    print(f"# N = {n}: K needs {n * n * 8 / 1e9:.1f} GB (+ ~{n * n * 4 / 1e9:.1f} GB of Cholesky factor); "
          f"{free:.0f} GB free in {args.out}", flush=True)
    if free < need + 5:
        raise SystemExit(f"not enough free disk in {args.out}: {free:.0f} GB < {need + 5:.0f} GB")
    out = {"n": n, "engine_width": args.engine_width, "block": args.block, "rank": args.rank, "c": args.c, "ridge": args.ridge, "tile": args.tile,
           "certificate_rtol": args.certificate_rtol, "workers": args.workers, "memory_limit": args.memory_limit}
    logf = open(os.path.join(args.out, f"spectra-{n}.log"), "w")

    state = {"client": None}

    def log(s):
        c = state["client"]
        if c is not None:  # peak RSS so far with every line, so a cut-short run still reports it
            try:
                w = c.run(vmhwm_mb)
                s += f"   (peak RSS MB so far: driver {vmhwm_mb():.0f}, workers {', '.join(f'{v:.0f}' for v in w.values())})"
            except Exception:  # noqa: BLE001
                pass
        s = f"[{time.strftime('%H:%M:%S')}] {s}"
        print("  " + s, flush=True)
        logf.write(s + "\n")
        logf.flush()

    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 1}), \
            LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                         memory_limit=args.memory_limit, dashboard_address=None) as cluster, Client(cluster) as client:
        out["seconds_blocks"] = assemble(client, gs, n, args.block, args.rank, args.c, args.ridge, args.seed,
                                         args.engine_width)
        out["disk_K_gb"] = du_gb(os.path.join(store.gram_path(gs, "synthetic", 0), "K"))
        out["peak_blocks_mb"] = {"workers": client.run(vmhwm_mb), "driver": vmhwm_mb()}
        log(f"blocks: {out['seconds_blocks']:.0f}s, K {out['disk_K_gb']:.1f} GB on disk")
        client.run(reset_vmhwm)
        client.run_on_scheduler(reset_vmhwm)
        reset_vmhwm()
        state["client"] = client
        t0 = time.perf_counter()
        settings = SpectrumSettings(dense_max=0, tol=args.tol, certificate_rtol=args.certificate_rtol,
                                    tile=args.tile or None)
        rec = gram_spectrum(str(store.gram_path(gs, "synthetic", 0)), client, settings, log=log)
        out["seconds_spectra"] = time.perf_counter() - t0
        out["peak_spectra_mb"] = {"driver": vmhwm_mb(), "scheduler": client.run_on_scheduler(vmhwm_mb),
                                  "workers": client.run(vmhwm_mb),
                                  "scheduler_in_driver": client.run_on_scheduler(os.getpid) == os.getpid()}
        out["records"] = {k: rec[k].as_dict() for k in ("lambda_min", "lambda_max")}
        out["spectra_seconds_split"] = rec["seconds"]
        out["products"], out["solves"] = rec["products"], rec["solves"]
        state["client"] = None
    if args.compare_dense and n in args.compare_dense:
        log("dense baseline (today's finalize_gram: K whole + eigvalsh) in a fresh subprocess")
        p = subprocess.run([sys.executable, "-c", DENSE_SCRIPT.format(root=os.path.dirname(HERE), gs=gs)],
                           capture_output=True, text=True, env=ENV0)
        if p.returncode != 0:
            out["dense"] = {"error": p.stderr[-2000:]}
        else:
            out["dense"] = json.loads(p.stdout.strip().splitlines()[-1])
    logf.close()
    if not args.keep:
        shutil.rmtree(gs, ignore_errors=True)
    return out


def report(r: dict) -> None:
    n = r["n"]
    lmin, lmax = r["records"]["lambda_min"], r["records"]["lambda_max"]
    sp = r["spectra_seconds_split"]
    what = (f"empirical NTK at init from the structured engine, width {r['engine_width']}, LeCun, tau0 = d^-1/2, "
            "float32 blocks" if r.get("engine_width") else
            f"synthetic K = J J^T/{r['rank']} + {r['c']:g} 11^T + {r['ridge']:g} I")
    print(f"\n## N = {n:,}  ({what}, Zarr blocks "
          f"{r['block']}, Cholesky tiles {r['tile'] or 'auto'}, {r['workers']} Dask workers x 1 thread, {r['memory_limit']})")
    print("| phase | seconds |\n|---|---:|")
    print(f"| blocks (K assembled into Zarr, {r['disk_K_gb']:.1f} GB on disk) | {r['seconds_blocks']:.0f} |")
    for k in ("lambda_max", "cholesky", "shift_invert", "certificate"):
        if k in sp:
            print(f"| spectra: {k} | {sp[k]:.0f} |")
    print(f"| spectra total | {r['seconds_spectra']:.0f} |")
    print(f"| **blocks + spectra** | **{r['seconds_blocks'] + r['seconds_spectra']:.0f}** |")
    print("\n| value | method | iterations | residual abs. | residual / value | certificate / note |\n|---|---|---:|---:|---:|---|")
    print(f"| lambda_max = {lmax['value']:.8g} | {lmax['method']} | {lmax['iterations']} products | "
          f"{lmax['residual']:.3g} | {lmax['residual'] / abs(lmax['value']):.2g} | |")
    trials = "; ".join(f"sigma={t['sigma']:.6g} {'ok' if t['ok'] else 'fails at col %s' % t['column']} ({t['seconds']:.0f}s)"
                       for t in lmin["notes"].get("certificate_trials", []))
    lo, hi = lmin["certificate"]
    print(f"| lambda_min = {lmin['value']:.10g} | {lmin['method']} (sigma {lmin['shift']:.3g}) | {lmin['iterations']} solves | "
          f"{lmin['residual']:.3g} | {lmin['residual'] / max(abs(lmin['value']), 1e-300):.2g} | in ({lo:.8g}, {hi:.8g}]: {trials} |")
    if not r.get("engine_width") and n > r["rank"] + 1:  # rank(J J^T + c 11^T) <= r + 1 < N: lambda_min = ridge exactly
        print(f"\nexact lambda_min of the synthetic kernel = ridge = {r['ridge']:g}: error {lmin['value'] - r['ridge']:.3g}")
    print("\n| process | peak RSS MB (blocks) | peak RSS MB (spectra) |\n|---|---:|---:|")
    pb, ps = r["peak_blocks_mb"], r["peak_spectra_mb"]
    print(f"| driver | {pb['driver']:.0f} | {ps['driver']:.0f} |")
    if not ps.get("scheduler_in_driver"):
        print(f"| scheduler | - | {ps['scheduler']:.0f} |")
    else:
        print("| (the LocalCluster's scheduler runs in the driver process) | | |")
    for i, (w, v) in enumerate(sorted(ps["workers"].items())):
        print(f"| worker {i} ({w}) | {pb['workers'].get(w, float('nan')):.0f} | {v:.0f} |")
    d = r.get("dense")
    if d:
        if "error" in d:
            print(f"\ndense baseline failed: {d['error']}")
            return
        peak_new = max([ps["driver"], ps["scheduler"]] + [float(v) for v in ps["workers"].values()])
        print(f"\n### N = {n:,}: new path vs today's dense path (K whole + eigvalsh, one process)")
        print("| | new (iterative, Dask) | today (dense) | ratio today/new |\n|---|---:|---:|---:|")
        print(f"| spectra seconds | {r['seconds_spectra']:.0f} | {d['total_s']:.0f} (read K {d['read_s']:.0f} + eigvalsh "
              f"{d['eigvalsh_s']:.0f}) | {d['total_s'] / r['seconds_spectra']:.2f} |")
        print(f"| peak RSS of the largest process, MB | {peak_new:.0f} | {d['peak_mb']:.0f} | {d['peak_mb'] / peak_new:.2f} |")
        print(f"| lambda_max | {lmax['value']:.12g} | {d['lambda_max']:.12g} | rel. diff {abs(lmax['value'] / d['lambda_max'] - 1):.2g} |")
        print(f"| lambda_min | {lmin['value']:.12g} | {d['lambda_min']:.12g} | rel. diff {abs(lmin['value'] / d['lambda_min'] - 1):.2g} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[20000])
    ap.add_argument("--compare-dense", type=int, nargs="*", default=None,
                    help="N values at which to also run today's dense path (no value: every N)")
    ap.add_argument("--block", type=int, default=1000, help="Gram block size = Zarr chunk of K")
    ap.add_argument("--tile", type=int, default=0, help="Cholesky tile rows (0: a multiple of the block near 4096)")
    ap.add_argument("--engine-width", type=int, default=0,
                    help="blocks from the NTK engine at this width (0: the synthetic kernel)")
    ap.add_argument("--rank", type=int, default=1024)
    ap.add_argument("--c", type=float, default=0.2)
    ap.add_argument("--ridge", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-10)
    ap.add_argument("--certificate-rtol", type=float, default=0.01)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="3GB")
    ap.add_argument("--out", default=os.path.join(HERE, "out", "spectra"))
    ap.add_argument("--keep", action="store_true", help="keep the Gram stores")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.compare_dense is not None and not args.compare_dense:
        args.compare_dense = list(args.n)
    os.makedirs(args.out, exist_ok=True)
    results = []
    for n in args.n:
        r = run_one(args, n)
        results.append(r)
        report(r)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1, default=float)


if __name__ == "__main__":
    main()
