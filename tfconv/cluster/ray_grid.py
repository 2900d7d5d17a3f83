"""Train an experiment's grid on a Ray cluster: one Ray task per grid point.

Which cluster (in this order): the ``address`` argument (config ``ray.address``), the RAY_ADDRESS
environment variable, else a local Ray cluster started for this job with ``num_cpus`` CPUs
(``ray.init(address="local")`` so that a stale cluster on the machine is never joined by accident).

Points already complete in the store are not submitted again.  Tasks are retried by Ray when their
worker process dies (``max_retries``); a retry of a finished point is a no-op because the run store
is written atomically and checked first.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from .. import store
from ..config import run_id
from ..runner import train_group, train_point


def resolve_address(address: Optional[str]) -> Optional[str]:
    return address or os.environ.get("RAY_ADDRESS") or None


def connect(address: Optional[str], num_cpus: int, num_gpus: Optional[int] = None, log=print) -> Dict[str, Any]:
    """Connect to (or start) a Ray cluster; returns a description of it."""
    import ray

    addr = resolve_address(address)
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}}
    if addr:
        log(f"[ray] joining the Ray cluster at {addr}")
        ray.init(address=addr, runtime_env=env, log_to_driver=False, ignore_reinit_error=True)
        started = False
    else:
        log(f"[ray] starting a local Ray cluster with {num_cpus} CPUs")
        kwargs = dict(address="local", num_cpus=int(num_cpus), include_dashboard=False,
                      log_to_driver=False, runtime_env=env, ignore_reinit_error=True)
        if num_gpus is not None:
            kwargs["num_gpus"] = num_gpus
        ray.init(**kwargs)
        started = True
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    res = ray.cluster_resources()
    log(f"[ray] {len(nodes)} node(s), {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs")
    return {"address": addr or "local", "started_here": started, "nodes": len(nodes),
            "cpus": res.get("CPU", 0), "gpus": res.get("GPU", 0)}


def run_grid(
    experiment: str,
    exp: Mapping[str, Any],
    points: Sequence[Mapping[str, Any]],
    data_store: str,
    train_store: str,
    address: Optional[str] = None,
    num_cpus: int = 1,
    cpus_per_task: float = 1,
    gpus_per_task: float = 0,
    max_retries: int = 3,
    threads_per_run: int = 1,
    log: Callable[[str], None] = print,
    shutdown: bool = True,
    vectorise: bool = False,
) -> List[Dict[str, Any]]:
    """Train every incomplete point on Ray; returns one summary per point (skipped ones included)."""
    import ray

    store.ensure_train_store(train_store)
    todo = [p for p in points if not store.run_complete(train_store, run_id(p))]
    done = [{"run_id": run_id(p), "skipped": True,
             "status": store.read_run(train_store, run_id(p))["attrs"]["status"]}
            for p in points if store.run_complete(train_store, run_id(p))]
    log(f"[train_grid] {experiment}: {len(points)} grid points, {len(done)} already complete, {len(todo)} to train")
    if not todo:
        return done
    info = connect(address, num_cpus, log=log)
    try:
        if gpus_per_task > 0 and info["gpus"] < gpus_per_task:
            raise RuntimeError(
                f"ray.gpus_per_task is {gpus_per_task:g} but the Ray cluster has {info['gpus']:g} GPUs: the tasks "
                "could never be scheduled. Set ray.gpus_per_task: 0 to train on CPUs, or join a cluster with GPUs."
            )
        opts = dict(num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=max_retries, retry_exceptions=False)
        if vectorise:
            # one task per (width, n_samples) group: its runs share every tensor shape
            groups: Dict[tuple, List[Mapping[str, Any]]] = {}
            for p in todo:
                groups.setdefault((p["width"], p.get("n_samples")), []).append(dict(p))
            remote = ray.remote(**opts)(train_group)
            pending = {remote.remote(experiment, dict(exp), g, str(data_store), str(train_store),
                                     int(threads_per_run)): f"{len(g)} runs of width {k[0]}" for k, g in groups.items()}
            log(f"[train_grid] vectorised: {len(groups)} task(s) for {len(todo)} runs")
        else:
            remote = ray.remote(**opts)(train_point)
            pending = {remote.remote(experiment, dict(exp), dict(p), str(data_store), str(train_store),
                                     int(threads_per_run)): run_id(p) for p in todo}
        t0 = time.time()
        results: List[Dict[str, Any]] = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=30)
            for ref in ready:
                pending.pop(ref)
                out = ray.get(ref)
                for res in (out if isinstance(out, list) else [out]):
                    results.append(res)
                    n = len(results)
                    el = time.time() - t0
                    eta = el / n * (len(todo) - n)
                    log(f"[train_grid] {n}/{len(todo)} {res['run_id']}: {res.get('status')}"
                        f" loss={res.get('final_loss', float('nan')):.3e} node={str(res.get('node_id', '?'))[:8]}"
                        f" elapsed={el:.0f}s eta={eta:.0f}s")
            if not ready:
                log(f"[train_grid] waiting: {len(pending)} task(s) running, elapsed {time.time() - t0:.0f}s")
        return done + results
    finally:
        if shutdown:
            ray.shutdown()
