"""Pipeline benchmarks: GD epochs/s per grid point (vectorised vs one run per task) and the
out-of-core N = 20,000 Gram assembled by Dask into Zarr (wall time, peak worker memory).

    python benchmarks/bench_pipeline.py [--quick] [--section train|gram20k|all] [--n 20000]

Everything is measured in this run on this machine; ratios are against the baseline measured in
the same run.  Sections are also importable by benchmarks/bench_gram.py.
"""
from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path



def bench_train(quick: bool = False, threads: int = 1):
    """Epochs per second per grid point: `train_gd` one run at a time vs `train_gd_vectorised` of all
    runs of one width (2 scalings x 3 inits = 6 runs), same data, same epochs, one thread each."""
    import torch

    from tfconv import ModelSpec, TrainConfig, make_synthetic, train_gd
    from tfconv.core.train_vectorised import train_gd_vectorised

    torch.set_num_threads(threads)
    ds = make_synthetic(100, 8, 32, seed=0)
    epochs = 20 if quick else 60
    tc = TrainConfig(step_size=1.0, epochs=epochs)
    rows = []
    for width in ([16, 64] if quick else [16, 64, 256, 1024]):
        specs = [ModelSpec(width=width, d=32, d_s=8, scaling=s, init=i) for s in ("inv_sqrt", "inv") for i in ("lecun", "he", "ntk")]
        train_gd(specs[0], ds.X, ds.y, 0, TrainConfig(step_size=1.0, epochs=2))  # warm-up
        t = time.perf_counter()
        for s in specs:
            train_gd(s, ds.X, ds.y, 0, tc)
        t_loop = time.perf_counter() - t
        t = time.perf_counter()
        train_gd_vectorised(specs, ds.X, ds.y, [0] * len(specs), tc)
        t_vec = time.perf_counter() - t
        per_loop = epochs * len(specs) / t_loop
        per_vec = epochs * len(specs) / t_vec
        rows.append({"width": width, "runs": len(specs), "epochs": epochs,
                     "epochs_per_s_per_point_loop": per_loop / len(specs),
                     "epochs_per_s_per_point_vectorised": per_vec / len(specs),
                     "grid_epochs_per_s_loop": per_loop, "grid_epochs_per_s_vectorised": per_vec,
                     "speedup": t_loop / t_vec})
    print("\n## GD training: epochs per second (N=100, d_s=8, d=32, float32, 1 thread)")
    print(f"{'width':>6} {'runs':>5} {'loop ep/s (grid)':>17} {'vectorised ep/s (grid)':>23} {'speedup':>8}")
    for r in rows:
        print(f"{r['width']:>6} {r['runs']:>5} {r['grid_epochs_per_s_loop']:>17.1f} "
              f"{r['grid_epochs_per_s_vectorised']:>23.1f} {r['speedup']:>8.2f}")
    return rows


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def gram_stores(wd: Path, n: int, width: int, scaling: str = "inv_sqrt", init: str = "lecun", dtype: str = "float32"):
    """A dataset store of n synthetic samples and a train store holding one run's epoch-0 checkpoint
    under ``wd``: what `tfconv.runner.gram_block` and `assemble_grams` read.  Returns (exp, point,
    data_store, train_store)."""
    from tfconv import ModelSpec, make_synthetic, store
    from tfconv.config import DatasetSpec, Experiment
    from tfconv.core.model import init_params
    from tfconv.core.train import TrainConfig, train_gd

    ds = make_synthetic(n, 8, 32, seed=0)
    data_store = wd / "data.zarr"
    store.write_dataset(data_store, ds)
    exp = Experiment.from_section("gram20k", {
        "grid": {"width": [width], "scaling": [scaling], "init": [init], "seed": [0]},
        "train": {"epochs": 1, "checkpoint_epochs": [0], "hidden": True, "dtype": dtype,
                  "step_size": 1.0, "loss": "mean", "divergence_factor": 1e6}, "gram": True},
        DatasetSpec("synth", "synthetic", {"n_samples": n}))
    point = exp.points[0]
    spec = ModelSpec(width=width, d=32, d_s=8, scaling=scaling, init=init, dtype=dtype)
    # a 1-epoch run on 2 samples only provides the stored epoch-0 checkpoint (the Gram is over all N)
    res = train_gd(spec, ds.X[:2], ds.y[:2], 0, TrainConfig(epochs=1, checkpoint_epochs=(0,)))
    train_store = wd / "train.zarr"
    store.ensure_train_store(train_store)
    store.write_run(train_store, point.run_id, point.as_dict(), res, initial=init_params(res.spec, res.seed))
    return exp, point, data_store, train_store


def bench_gram20k(n: int = 20000, width: int = 256, block_size: int = 1000, n_workers: int = 2,
                  memory_limit: str = "3GB", workdir: str | None = None):
    """The N x N Gram of one checkpoint assembled by a LocalCluster of `n_workers` processes into Zarr."""
    from distributed import Client, LocalCluster

    from tfconv.cluster.dask_gram import assemble_grams
    from tfconv.runner import GramJob, GramSettings

    wd = Path(workdir or tempfile.mkdtemp(prefix="tfconv-gram20k-"))
    exp, point, data_store, train_store = gram_stores(wd, n, width)
    gram_store = wd / "gram.zarr"
    t0 = time.time()
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, memory_limit=memory_limit,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        job = GramJob(exp, str(data_store), str(train_store), str(gram_store),
                      GramSettings(block_size=block_size, chunk_size=250))
        info = assemble_grams(job, [point], client, log=lambda m: print(m, flush=True))
        peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    wall = time.time() - t0
    out = {"n": n, "width": width, "block_size": block_size, "blocks": info["blocks_computed"],
           "workers": n_workers, "memory_limit": memory_limit, "wall_s": wall,
           "blocks_s": info["seconds_blocks"], "eigenvalues_s": info["seconds_eigenvalues"],
           "peak_worker_rss_mb": max(peaks.values()), "driver_peak_rss_mb": _peak_rss_mb(),
           "store": str(gram_store)}
    print(f"\n## Gram N={n}: width {width}, {info['blocks_computed']} blocks of {block_size}, {n_workers} workers")
    print(f"wall {wall:.0f} s (blocks {out['blocks_s']:.0f} s, float64 eigenvalues on the driver {out['eigenvalues_s']:.0f} s); "
          f"peak worker RSS {out['peak_worker_rss_mb']:.0f} MB (cap {memory_limit}); driver peak {out['driver_peak_rss_mb']:.0f} MB")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--section", default="all", choices=["train", "gram20k", "all"])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    results = {}
    if a.section in ("train", "all"):
        results["train"] = bench_train(a.quick)
    if a.section in ("gram20k", "all"):
        results["gram20k"] = bench_gram20k(n=2000 if a.quick else a.n)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
