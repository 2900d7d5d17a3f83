"""Determinism (issue 8): the same grid point trained in-process, through a local Ray cluster and
through a real two-node Ray cluster gives bitwise identical curves and checkpoints on one machine;
the Gram matrix is the same within float tolerance for any block size (and bitwise the same for the
same block size)."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from tfconv import runner, store
from tfconv.cluster.dask_spectra import finalize_gram
from tfconv.config import load_workflow
from tfconv.pipeline import steps
from tfconv.core.ntk import ntk_matrix, params_from_numpy
from timeouts import hard_timeout  # noqa: E402 (tests/ is on sys.path)

pytestmark = pytest.mark.slow

N = 10
CONFIG = {
    "datasets": {"synth": {"kind": "synthetic", "n_samples": N, "d_s": 4, "d": 8, "seed": 3}},
    "experiments": {
        "det": {
            "dataset": "synth",
            "grid": {"width": [8, 16], "scaling": ["inv_sqrt", "inv", 0.5], "init": ["lecun", "he", "ntk"], "seed": [0, 7]},
            "train": {"step_size": "0.5limit", "epochs": 150, "checkpoint_epochs": [0, 75, 150]},
        }
    },
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("det")
    wf = load_workflow(dict(CONFIG, results=str(root / "results")))
    exp = wf.experiment("det")
    grid = exp.points
    # six points that differ in every axis (widths, all three scalings, all three inits, both seeds)
    points = [grid[i] for i in (0, 7, 14, 21, 28, 35)]
    assert len({p.run_id for p in points}) == 6
    steps.make_dataset(wf, "synth")
    data = str(wf.results.data("synth"))
    threads = torch.get_num_threads()
    inproc = str(root / "inprocess.zarr")
    store.ensure_train_store(inproc)
    for p in points:
        runner.train_point(exp, p, data, inproc, threads=1)
    torch.set_num_threads(threads)
    return {"root": root, "exp": exp, "points": points, "data": data, "inproc": inproc}


def _assert_bitwise(store_a, store_b, points, where):
    for p in points:
        rid = p.run_id
        a, b = store.read_run(store_a, rid), store.read_run(store_b, rid)
        assert sorted(a["curves"]) == sorted(b["curves"])
        for k in a["curves"]:
            assert a["curves"][k].tobytes() == b["curves"][k].tobytes(), f"{where}: {rid} curve {k} differs"
        for e in a["checkpoints"]:
            for w in a["checkpoints"][e]:
                assert a["checkpoints"][e][w].tobytes() == b["checkpoints"][e][w].tobytes(), f"{where}: {rid} {e}/{w}"
        assert a["attrs"]["status"] == b["attrs"]["status"]


@hard_timeout(240)
def test_training_bitwise_identical_in_process_local_ray_and_two_node_ray(setup, tmp_path, monkeypatch):
    from clusters import ray_two_nodes
    from tfconv.cluster.ray_grid import GridJob, run_grid

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # auth off in this process: Ray fixes its auth mode once per process, and this session's other Ray
    # tests join `ray start` clusters started with RAY_AUTH_MODE=disabled (tests/clusters.py); the
    # default token mode is checked in a process of its own (tests/cluster/test_loopback.py).
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    s = setup
    local = str(tmp_path / "local-ray.zarr")
    res = run_grid(GridJob(s["exp"], s["data"], local, threads_per_run=1), s["points"], address=None, num_cpus=2,
                   log=lambda m: None)
    assert len(res) == len(s["points"]) and all(not r.get("skipped") for r in res)
    _assert_bitwise(s["inproc"], local, s["points"], "local Ray vs in-process")

    two = str(tmp_path / "two-node-ray.zarr")
    with ray_two_nodes(tmp_path / "ray-logs") as address:
        res = run_grid(GridJob(s["exp"], s["data"], two, threads_per_run=1), s["points"], address=address,
                       num_cpus=1, log=lambda m: None)
    nodes = {r.get("node_id") for r in res}
    assert len(nodes) == 2, f"the two-node cluster ran the grid on {len(nodes)} node(s)"
    _assert_bitwise(s["inproc"], two, s["points"], "two-node Ray vs in-process")


def _assemble_in_process(s, point, epoch, gram_store, engine, block_size, chunk_size):
    rid = point.run_id
    grp = store.ensure_gram(gram_store, rid, epoch, N, block_size)
    job = runner.GramJob(s["exp"], s["data"], s["inproc"], gram_store, runner.GramSettings(engine, block_size, chunk_size))
    for bi, bj in store.upper_blocks(N, block_size):
        runner.gram_block(job, point, epoch, bi, bj)
    finalize_gram(grp)
    return store.read_gram(gram_store, rid, epoch)


@hard_timeout(240)
def test_gram_same_within_tolerance_for_any_block_size(setup, tmp_path):
    s = setup
    threads = torch.get_num_threads()
    ds = store.read_dataset(s["data"])
    try:
        for point in s["points"][-1:]:
            rid = point.run_id
            run = runner.load_run(s["inproc"], rid)  # with the re-derived epoch-0 checkpoint
            spec = point.spec(ds)
            spec64 = spec.__class__(**{**spec.to_dict(), "dtype": "float64"})
            for epoch in (0, 150):
                # reference: the whole matrix at once, float64 parameters and the exact engine
                direct = ntk_matrix(params_from_numpy(run["checkpoints"][epoch], dtype=torch.float64), spec64, ds.X,
                                    engine="exact")
                scale = np.abs(direct).max()
                for engine in ("structured", "exact"):
                    # block sizes that divide N, that do not, 1 (every entry its own block), > N (one block)
                    # (block size 1 is N(N+1)/2 tiny tasks: left to the fast engine)
                    for bs in ((1, 3, 4, 7, N, 64) if engine == "structured" else (2, 3, 7, N, 64)):
                        chunk = min(bs, 3)
                        K, ev = _assemble_in_process(s, point, epoch, str(tmp_path / f"{engine}-{bs}.zarr"), engine, bs, chunk)
                        np.testing.assert_allclose(K, direct, rtol=2e-5, atol=2e-6 * scale,
                                                   err_msg=f"{rid} epoch {epoch} engine {engine} block_size {bs}")
                        np.testing.assert_allclose(ev, np.linalg.eigvalsh(direct), rtol=1e-4, atol=1e-5 * scale)
                    # the same block size twice: bitwise the same
                    K1, _ = _assemble_in_process(s, point, epoch, str(tmp_path / f"{engine}-again.zarr"), engine, 3, 3)
                    K2, _ = store.read_gram(str(tmp_path / f"{engine}-3.zarr"), rid, epoch)
                    assert K1.tobytes() == K2.tobytes(), f"{rid} epoch {epoch} {engine}: same block size, other bits"
                    import shutil

                    shutil.rmtree(tmp_path / f"{engine}-again.zarr")
    finally:
        torch.set_num_threads(threads)


@hard_timeout(240)
def test_gram_from_shared_factor_rows_equals_the_per_block_gram(setup, tmp_path):
    """Block tasks that share their samples' factor rows through the store (`runner.ntk_block_shared`,
    what large Grams do) give the Gram of per-block computation: the same numbers up to the order of the
    GEMM sums (float64 parameters: 1e-12 of max |K|), every block row's factors computed once, the kept
    files gone after finalisation; a truncated or foreign factor file is computed again, not read."""
    s = setup
    point, epoch, bs = s["points"][-1], 150, 3  # 4 block rows (3, 3, 3, 1)
    rid = point.run_id
    exp64 = s["exp"]
    plain = str(tmp_path / "plain.zarr")
    K_plain, _ = _assemble_in_process(s, point, epoch, plain, "structured", bs, 3)

    shared = str(tmp_path / "shared.zarr")
    grp = store.ensure_gram(shared, rid, epoch, N, bs)
    settings = runner.GramSettings("structured", bs, 3, factor_cache_min_samples=0)
    ds = store.read_dataset(s["data"])
    spec = point.spec(ds)
    assert runner.shares_factors(spec, settings, N)
    assert not runner.shares_factors(spec, runner.GramSettings("structured", bs, 3), N)  # N = 10 < 4096
    assert not runner.shares_factors(spec, runner.GramSettings("exact", bs, 3, factor_cache_min_samples=0), N)
    # counting computed samples: call the shared path block by block as gram_block does
    from tfconv.core.kernel import precision_dtype
    _, arrays = runner._checkpoint(s["inproc"], rid, epoch)
    params = params_from_numpy(arrays, dtype=precision_dtype(exp64.gram_precision))
    ranges = store.block_ranges(N, bs)
    computed = 0
    for bi, bj in store.upper_blocks(N, bs):
        block, c = runner.ntk_block_shared(params, spec, ds.X, ranges, bi, bj, grp, 3)
        computed += c
        store.write_block(grp, bi, bj, block, bs)
    assert computed == N  # each sample's factors once
    files = sorted(p.name for p in (store.gram_path(shared, rid, epoch) / "factors").iterdir())
    assert files == ["0.npy", "1.npy", "2.npy", "3.npy"]
    # a damaged file (truncated) and a foreign one (other shape) are computed again, then equal
    f1 = store.factor_file(grp, 1)
    f1.write_bytes(f1.read_bytes()[:200])
    np.save(store.factor_file(grp, 2), np.zeros((3, 5)))
    block, c = runner.ntk_block_shared(params, spec, ds.X, ranges, 1, 2, grp, 3)
    assert c == 6
    K_mid = np.asarray(grp["K"][3:6, 6:9])
    np.testing.assert_array_equal(block, K_mid)
    finalize_gram(grp)
    assert not (store.gram_path(shared, rid, epoch) / "factors").exists()
    K_shared, _ = store.read_gram(shared, rid, epoch)
    scale = np.abs(K_plain).max()
    np.testing.assert_allclose(K_shared, K_plain, rtol=0, atol=1e-12 * scale)
    assert np.array_equal(K_shared, K_shared.T)

    # through gram_block: the same numbers
    again = str(tmp_path / "again.zarr")
    grp2 = store.ensure_gram(again, rid, epoch, N, bs)
    job = runner.GramJob(exp64, s["data"], s["inproc"], again, settings)
    for bi, bj in store.upper_blocks(N, bs):
        runner.gram_block(job, point, epoch, bi, bj)
    assert (store.gram_path(again, rid, epoch) / "factors" / "0.npy").exists()
    finalize_gram(grp2)
    K_again, _ = store.read_gram(again, rid, epoch)
    np.testing.assert_array_equal(K_again, K_shared)
