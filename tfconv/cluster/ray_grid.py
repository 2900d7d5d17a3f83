"""Train an experiment's grid on a Ray cluster: one Ray task per grid point.

Which cluster (in this order): the ``address`` argument (config ``ray.address``), the RAY_ADDRESS
environment variable, else a local Ray cluster started for this job with ``num_cpus`` CPUs
(``ray.init(address="local")`` so that a stale cluster on the machine is never joined by accident).
A local cluster listens on 127.0.0.1 only (GCS, raylet, workers, agents), under Ray's default token
authentication unless RAY_AUTH_MODE says otherwise; it is private to the step, and every process of
it is ended when the step ends, also when its head died first (`stop_local_cluster`).

The step (`tfconv.pipeline.steps.train_grid`) decides what is left to train and passes only those
points.  Tasks are retried by Ray when their worker process dies (``max_retries``); a retry of a
finished point is a no-op because the run store is written atomically and checked first.  The Ray
task wrappers here are the only code that asks Ray where it runs: they pass the node id and the
device (a GPU when Ray gave the task one) into the scheduler-agnostic units of `tfconv.runner`.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Sequence

from .. import runner

#: The address every server of a local Ray cluster listens on (GCS, raylet, workers, agents).
LOOPBACK = "127.0.0.1"


def resolve_address(address: Optional[str]) -> Optional[str]:
    return address or os.environ.get("RAY_ADDRESS") or None


@contextlib.contextmanager
def _loopback_node_address():
    """Let ``ray.init(_node_ip_address="127.0.0.1")`` keep the loopback address.

    Ray's servers listen on loopback only when the node's address is literally 127.0.0.1 (GCS, raylet
    and core workers: ``listen_to_localhost_only``; the agents bind to the node address), but on
    Linux ``ray.init`` replaces a loopback ``_node_ip_address`` by this host's routable address
    (``services.resolve_ip_for_localhost``) unless Ray clusters are disabled, as on macOS and
    Windows.  Disable them for the call only; a local cluster has one node anyway."""
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


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
                      log_to_driver=False, runtime_env=env, ignore_reinit_error=True,
                      _node_ip_address=LOOPBACK)
        if num_gpus is not None:
            kwargs["num_gpus"] = num_gpus
        import logging

        # Ray's own notice ("Token authentication is enabled ...") is said once here, in our log's words
        auth_log = logging.getLogger("ray._private.authentication.authentication_token_setup")
        level, mode = auth_log.level, os.environ.get("RAY_AUTH_MODE")  # Ray sets it during init
        auth_log.setLevel(logging.ERROR)
        try:
            with _loopback_node_address():
                ray.init(**kwargs)
        except BaseException:
            # a head that died during start-up leaves the processes already started (agents, workers)
            stop_local_cluster(log)
            raise
        finally:
            auth_log.setLevel(level)
        log("[ray] bound to 127.0.0.1; token authentication "
            + (f"mode {mode!r} (RAY_AUTH_MODE)" if mode else "on (Ray's default; RAY_AUTH_MODE=disabled turns it off)"))
        started = True
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    res = ray.cluster_resources()
    log(f"[ray] {len(nodes)} node(s), {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs")
    return {"address": addr or "local", "started_here": started, "nodes": len(nodes),
            "cpus": res.get("CPU", 0), "gpus": res.get("GPU", 0)}


def local_cluster_processes() -> List[Any]:
    """The live processes of the Ray cluster(s) this process started locally: Ray names a head's
    session ``session_<date>_<pid of the driver>`` and passes its folder to every process it starts
    (GCS, raylet, workers, dashboard and runtime-env agents), also to those it no longer parents."""
    import re

    import psutil

    mark = re.compile(r"/session_[0-9_-]+_%d(/|$)" % os.getpid())
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.pid != os.getpid() and any(mark.search(a) for a in (proc.info["cmdline"] or [])):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def stop_local_cluster(log=print, timeout: float = 10.0) -> int:
    """Shut Ray down in this process and end every process of the local cluster it started that is
    still alive (whatever died first); returns how many had to be ended."""
    import psutil
    import ray

    with contextlib.suppress(Exception):
        ray.shutdown()
    left = local_cluster_processes()
    if left:
        names = set()
        for p in left:
            with contextlib.suppress(psutil.Error):
                names.add(p.name())
        log(f"[ray] ending {len(left)} process(es) of the local Ray cluster that outlived its shutdown: "
            + ", ".join(sorted(names)))
        for p in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.terminate()
        _, alive = psutil.wait_procs(left, timeout=timeout)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(alive, timeout=timeout)
    return len(left)


def _task_context():
    """(node id, device) of the running Ray task: a GPU device only when Ray assigned one."""
    import ray
    import torch

    node = ray.get_runtime_context().get_node_id()
    device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else None
    return node, device


@dataclass(frozen=True)
class GridJob:
    """What every training task of one experiment shares: the experiment, its dataset and train stores,
    the torch threads of one run, and the dataset hash the step's driver verified (``expected_hash``)."""

    exp: Any
    data_store: str
    train_store: str
    threads_per_run: int = 1
    expected_hash: Optional[str] = None


@dataclass(frozen=True)
class RayTasks:
    """How training tasks are scheduled on Ray (config ``ray``): the CPUs and GPUs one task holds, how
    often a task whose worker died is retried, and whether runs of one width share a vectorised task."""

    cpus_per_task: float = 1
    gpus_per_task: float = 0
    max_retries: int = 3
    vectorise: bool = False


def train_point_task(job: GridJob, point):
    node, device = _task_context()
    return runner.train_point(job.exp, point, job.data_store, job.train_store, job.threads_per_run, device=device,
                              node_id=node, expected_hash=job.expected_hash)


def train_group_task(job: GridJob, points):
    node, device = _task_context()
    return runner.train_group(job.exp, points, job.data_store, job.train_store, job.threads_per_run, device=device,
                              node_id=node, expected_hash=job.expected_hash)


def point_cost(exp, point) -> float:
    """A grid point's training cost in arbitrary units (for the ETA): epochs x samples x the per-sample
    work of the model (the width x width layer dominates; kernel-only runs cost one kernel)."""
    w = float(point.width)
    per_sample = w * w + 4.0 * w * 32 + w  # Wh, the three token projections (d ~ 32), wo
    epochs = 1 if point.kernel_only else exp.train.epochs
    return epochs * point.n_samples * per_sample + point.n_samples ** 2 * w


def vectorised_groups(points: Sequence[Any]) -> Dict[tuple, List[Any]]:
    """Points that can share one vectorised computation: same width and n_samples."""
    groups: Dict[tuple, List[Any]] = {}
    for p in points:
        groups.setdefault((p.width, p.get("n_samples")), []).append(p)
    return groups


def run_grid(job: GridJob, points: Sequence[Any], address: Optional[str] = None, num_cpus: int = 1,
             tasks: RayTasks = RayTasks(), log: Callable[[str], None] = print,
             shutdown: bool = True) -> List[Dict[str, Any]]:
    """Train `points` (the grid points left to train) of ``job`` on Ray (joined at ``address``, else a
    local cluster of ``num_cpus`` CPUs), ``tasks`` scheduled so; returns one summary per point."""
    import ray

    if not points:
        return []
    exp = job.exp
    info = connect(address, num_cpus, log=log)
    try:
        if tasks.gpus_per_task > 0 and info["gpus"] < tasks.gpus_per_task:
            raise RuntimeError(
                f"ray.gpus_per_task is {tasks.gpus_per_task:g} but the Ray cluster has {info['gpus']:g} GPUs: the "
                "tasks could never be scheduled. Set ray.gpus_per_task: 0 to train on CPUs, or join a cluster with "
                "GPUs."
            )
        opts = dict(num_cpus=tasks.cpus_per_task, num_gpus=tasks.gpus_per_task, max_retries=tasks.max_retries,
                    retry_exceptions=False)
        job = replace(job, data_store=str(job.data_store), train_store=str(job.train_store),
                      threads_per_run=int(job.threads_per_run))
        if tasks.vectorise:
            # one task per (width, n_samples) group: its runs share every tensor shape
            groups = vectorised_groups(points)
            remote = ray.remote(**opts)(train_group_task)
            pending = {remote.remote(job, g): f"{len(g)} runs of width {k[0]}" for k, g in groups.items()}
            log(f"[train_grid] vectorised: {len(groups)} task(s) for {len(points)} runs")
        else:
            remote = ray.remote(**opts)(train_point_task)
            pending = {remote.remote(job, p): p.run_id for p in points}
        t0 = time.time()
        results: List[Dict[str, Any]] = []
        cost = {p.run_id: point_cost(exp, p) for p in points}
        total, done_cost = sum(cost.values()), 0.0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=30)
            for ref in ready:
                pending.pop(ref)
                out = ray.get(ref)
                for res in (out if isinstance(out, list) else [out]):
                    results.append(res)
                    for w in res.get("warnings", []):
                        log(w)
                    n = len(results)
                    el = time.time() - t0
                    done_cost += cost.get(res["run_id"], 0.0)
                    eta = el / max(done_cost, 1e-12) * (total - done_cost)  # weighted by each point's cost
                    log(f"[train_grid] {n}/{len(points)} {res['run_id']}: " + ("kernel only" if res.get("status") == "kernel_only"
                        else f"{res.get('status')} loss={res.get('final_loss', float('nan')):.3e}") + f" step={res.get('step_size', float('nan')):.3g}"
                        f" (limit {res.get('step_limit', float('nan')):.3g}) node={str(res.get('node_id') or '?')[:8]}"
                        f" elapsed={el:.0f}s eta={eta:.0f}s")
            if not ready:
                log(f"[train_grid] waiting: {len(pending)} task(s) running, elapsed {time.time() - t0:.0f}s")
        return results
    finally:
        if shutdown and info["started_here"]:
            stop_local_cluster(log)  # no process of the cluster outlives the step
        elif shutdown:
            ray.shutdown()
