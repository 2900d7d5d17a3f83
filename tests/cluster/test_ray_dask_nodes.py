"""Ray and Dask across separate node/worker processes (real clusters from tests/clusters.py, no mocks).

* A Ray head and a Ray worker node, started as separate ``ray start --block`` processes, train the
  small config's grid through ``tfconv.cluster.ray_grid.run_grid(address=...)``: tasks run on both
  node ids and every stored array equals an in-process run bit for bit.
* A ``dask scheduler`` and two ``dask worker`` processes assemble the Gram matrices through
  ``tfconv.cluster.dask_gram.assemble_grams(client=Client(address))``: blocks run on both workers and
  the result equals ``tfconv.ntk.ntk_matrix`` of the stored checkpoint parameters.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from clusters import assert_runs_bitwise_equal, dask_external, ray_two_nodes

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "tests" / "configs" / "config_small.yaml"
EXP = "grid"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The small config's dataset, and its grid trained in this process (the reference)."""
    import yaml

    from tfconv import store
    from tfconv.config import load_workflow
    from tfconv.pipeline.steps import make_dataset
    from tfconv.runner import train_point

    os.environ.pop("RAY_ADDRESS", None)
    d = tmp_path_factory.mktemp("multinode")
    wf = load_workflow(dict(yaml.safe_load(SMALL.read_text()), results=str(d / "results")))
    exp = wf.experiment(EXP)
    make_dataset(wf, exp.dataset.name)
    data = str(wf.results.data(exp.dataset.name))
    points = exp.points
    ref = str(d / "train_inprocess.zarr")
    store.ensure_train_store(ref)
    for p in points:
        train_point(exp, p, data, ref, wf.threads_per_run)
    return {"wf": wf, "exp": exp, "points": points, "data": data, "ref": ref, "dir": d}




def test_ray_two_nodes_train_grid_equals_in_process(small, tmp_path):
    import ray

    from tfconv.cluster.ray_grid import GridJob, RayTasks, run_grid

    wf, exp, points = small["wf"], small["exp"], small["points"]
    out = str(small["dir"] / "train_ray.zarr")
    t0 = time.time()
    with ray_two_nodes(tmp_path) as address:
        results = run_grid(GridJob(exp, small["data"], out, threads_per_run=wf.threads_per_run), points,
                           address=address, num_cpus=1,
                           tasks=RayTasks(cpus_per_task=1, gpus_per_task=0, max_retries=0))
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        try:
            cluster_nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        finally:
            ray.shutdown()
    seconds = time.time() - t0
    assert len(cluster_nodes) == 2
    trained = [r for r in results if not r.get("skipped")]
    assert len(trained) == len(points) == 8
    node_ids = {r["node_id"] for r in trained}
    print(f"ray two nodes: {len(points)} points in {seconds:.1f}s on node ids {sorted(node_ids)}")
    assert node_ids == cluster_nodes, f"tasks ran on {node_ids}, cluster nodes {cluster_nodes}"
    assert_runs_bitwise_equal(small["ref"], out, points)


def test_dask_external_workers_assemble_gram_equal_to_direct(small):
    import torch
    from distributed import Client, get_task_stream

    from tfconv import runner, store
    from tfconv.cluster.dask_gram import assemble_grams
    from tfconv.core.ntk import ntk_matrix, params_from_numpy

    wf, exp, points = small["wf"], small["exp"], small["points"]
    gcfg = wf.gram
    ds = store.read_dataset(small["data"])
    gram = str(small["dir"] / "gram.zarr")
    t0 = time.time()
    with dask_external(n_workers=2) as address:
        with Client(address, timeout=30) as client:
            workers = set(client.scheduler_info(n_workers=-1)["workers"])
            with get_task_stream(client) as ts:
                job = runner.GramJob(exp, small["data"], small["ref"], gram,
                                     runner.GramSettings(gcfg["engine"], gcfg["block_size"], gcfg["chunk_size"],
                                                         threads=wf.threads_per_run))
                info = assemble_grams(job, points, client, retries=0)
    seconds = time.time() - t0
    used = {t["worker"] for t in ts.data if str(t["key"]).startswith("gram-")}
    print(f"dask external: {info['blocks_computed']} blocks in {seconds:.1f}s on workers {sorted(used)}")
    assert len(workers) == 2 and used == workers, f"blocks ran on {used}, workers {workers}"
    assert info["grams"] == len(points) * len(exp.gram_epochs)
    for p in points:
        rid = p.run_id
        run = runner.load_run(small["ref"], rid)  # every checkpoint, the re-derived initialisation too
        spec = p.spec(ds)
        for epoch, arrays in run["checkpoints"].items():
            K, ev = store.read_gram(gram, rid, epoch)
            params = params_from_numpy(arrays, dtype=spec.torch_dtype)
            with torch.no_grad():
                direct = ntk_matrix(params, spec, ds.X, engine=gcfg["engine"], chunk_size=gcfg["chunk_size"])
            # same engine and dtype; blocks vs one matrix may only reorder floating-point sums
            np.testing.assert_allclose(K, direct, rtol=1e-5, atol=1e-6 * np.abs(direct).max(),
                                       err_msg=f"{rid} epoch {epoch}")
            np.testing.assert_array_equal(K, K.T)
            np.testing.assert_allclose(ev, np.linalg.eigvalsh(K.astype(np.float64)), rtol=1e-10, atol=1e-12)
