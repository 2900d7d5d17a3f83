"""Assemble the empirical NTK Gram matrices of an experiment with dask.distributed into Zarr.

One Dask task per upper-triangular block of each N x N Gram matrix (per run and checkpoint epoch);
each task writes its own chunk-aligned region (the block and its mirror) and then its own completion
flag, so no two writers ever share a chunk.  Blocks already done are not submitted; after all blocks
of a matrix are done its spectrum is computed (`tfconv.cluster.dask_spectra.finalize_gram`): up to
``gram.spectrum_dense_max`` rows every eigenvalue densely on one process, above it lambda_max and
lambda_min iteratively with this client over the Zarr-stored K (`tfconv.cluster.dask_spectra`), and
the store publishes the matrix as complete, last.

Which cluster: the ``scheduler_address`` argument (config ``dask.scheduler_address``), the
DASK_SCHEDULER_ADDRESS environment variable, a dask-jobqueue SLURMCluster when ``jobqueue`` is
configured, else a local process-based cluster.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from .. import store
from ..runner import GramJob, gram_block
from .dask_spectra import SpectrumSettings, finalize_gram


@contextlib.contextmanager
def dask_client(dask_cfg: Mapping[str, Any], log: Callable[[str], None] = print, threads: int = 1) -> Iterator[Any]:
    """A distributed.Client for the configured cluster; clusters started here are closed on exit.
    ``n_workers: null`` starts one worker per thread of the job (`threads`)."""
    dask_cfg = dict(dask_cfg)
    if not dask_cfg.get("n_workers"):
        dask_cfg["n_workers"] = max(1, int(threads))
    from distributed import Client, LocalCluster

    addr = dask_cfg.get("scheduler_address") or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if addr:
        log(f"[dask] connecting to the scheduler at {addr}")
        with Client(addr) as client:
            yield client
        return
    if dask_cfg.get("jobqueue"):
        import dask
        from dask_jobqueue import SLURMCluster

        jq = _jobqueue_binding(dict(dask_cfg["jobqueue"]))
        n_jobs = int(jq.pop("n_jobs", dask_cfg.get("n_workers", 2)))
        log(f"[dask] starting {n_jobs} SLURM job(s) of workers via dask-jobqueue: {jq}")
        allowed = {"distributed.scheduler.allowed-failures": int(dask_cfg.get("retries", 3))}
        with dask.config.set(allowed), SLURMCluster(**jq) as cluster, Client(cluster) as client:
            cluster.scale(jobs=n_jobs)
            client.wait_for_workers(1, timeout=600)
            yield client
        return
    # scheduler, nannies and workers listen on loopback only; no dashboard
    log(f"[dask] starting a local cluster: {dask_cfg['n_workers']} worker process(es) x "
        f"{dask_cfg['threads_per_worker']} thread(s), {dask_cfg['memory_limit']} each")
    import dask

    # A task whose worker dies is rescheduled up to `retries` times (the scheduler's allowed-failures);
    # `retries` on submit covers tasks that raise.  Block writes are idempotent, so both are safe.
    allowed = {"distributed.scheduler.allowed-failures": int(dask_cfg.get("retries", 3))}
    with dask.config.set(allowed), \
            LocalCluster(n_workers=int(dask_cfg["n_workers"]), threads_per_worker=int(dask_cfg["threads_per_worker"]),
                         processes=True, memory_limit=dask_cfg["memory_limit"], dashboard_address=None,
                         host="127.0.0.1") as cluster, \
            Client(cluster) as client:
        yield client


# Shell lines run by each dask-jobqueue worker job before the worker starts: the node's SLURM address
# (NodeAddr, resolved), which the worker and its nanny then bind to.
_NODE_ADDR_PROLOGUE = (
    'TFCONV_NODE_ADDR=$(getent ahostsv4 "$(scontrol show node -o "${SLURMD_NODENAME:-$(hostname -s)}" '
    "| sed -n 's/.* NodeAddr=\\([^ ]*\\).*/\\1/p')\" | awk 'NR==1{print $1}')",
    'export TFCONV_NODE_ADDR="${TFCONV_NODE_ADDR:-$(hostname -s)}"',
)


def _jobqueue_binding(jq: Dict[str, Any]) -> Dict[str, Any]:
    """dask-jobqueue settings that bind every server to the address it needs and no wider.

    Unless the config chooses itself (``interface``, ``scheduler_options.host``/``interface``,
    ``--host``/``--interface`` in ``worker_extra_args``): the scheduler listens on this machine's
    address in the SLURM network (`slurm.node_address`: the node's NodeAddr inside a job, else
    the interface that routes to slurmctld) and its HTTP endpoint (no dashboard) on that address
    too, on a free port; each worker and its nanny listen on their node's NodeAddr, without a
    dashboard.  (dask-jobqueue's own defaults: all interfaces, dashboard on :8787.)
    """
    from .slurm import node_address

    if jq.get("interface"):
        return jq
    sched = dict(jq.get("scheduler_options") or {})
    if "host" not in sched and "interface" not in sched:
        addr = node_address()
        sched["host"] = addr
        sched.setdefault("dashboard", False)
        sched.setdefault("dashboard_address", f"{addr}:0")
    jq["scheduler_options"] = sched
    extra = list(jq.get("worker_extra_args") or [])
    if not any(str(a).split("=")[0] in ("--host", "--interface", "--listen-address") for a in extra):
        jq["job_script_prologue"] = [*(jq.get("job_script_prologue") or []), *_NODE_ADDR_PROLOGUE]
        extra += ["--host", "$TFCONV_NODE_ADDR"]
        if not any(str(a).startswith("--dashboard") or a == "--no-dashboard" for a in extra):
            # no dashboard; the worker's HTTP endpoint (/health, /metrics) on the node address too
            # (its default ":0" would listen on all addresses)
            extra += ["--no-dashboard", "--dashboard-address", "$TFCONV_NODE_ADDR:0"]
    jq["worker_extra_args"] = extra
    return jq


def gram_jobs(exp, points: Sequence[Any], train_store: str) -> List[Tuple[Any, int]]:
    """(point, epoch) of every Gram to assemble: each checkpoint that a run stored (diverged runs
    have only the checkpoints before their divergence)."""
    jobs = []
    for p in points:
        rid = p.run_id
        if not store.run_complete(train_store, rid):
            raise store.StoreError(f"run {rid} is not complete in {train_store}; run train_grid first")
        attrs = store.run_attrs(train_store, rid)
        for e in exp.gram_epochs:
            if e in attrs["checkpoint_epochs"]:
                jobs.append((p, e))
    return jobs


def _rank_bound(train_store, rid: str) -> Optional[int]:
    """rank K <= this for the run's model whatever its parameters (`ntk_structured.rank_bound`), from
    the run's recorded spec; None when the run does not record one."""
    from ..core.model import ModelSpec
    from ..core.ntk_structured import rank_bound

    spec = store.run_attrs(train_store, rid).get("spec")
    return rank_bound(ModelSpec(**spec)) if spec else None


def assemble_grams(job: GramJob, points: Sequence[Any], client, spectrum: Optional[SpectrumSettings] = None,
                   provenance: Optional[Mapping[str, Any]] = None, log: Callable[[str], None] = print,
                   retries: int = 3, max_in_flight: int = 256) -> Dict[str, Any]:
    """Assemble (or resume) every Gram of the experiment (``job``: its stores and how blocks are
    computed) with the Dask ``client``, one task per block, then finalise each Gram (`finalize_gram`:
    ``spectrum``, the spectrum settings); returns counts and timings.  ``retries``: per block task;
    ``max_in_flight``: block tasks submitted at a time."""
    t0 = time.time()
    exp, gram_store, block_size = job.exp, job.gram_store, job.settings.block_size
    jobs = gram_jobs(exp, points, job.train_store)
    to_finalize = []
    n_blocks_total = n_blocks_skipped = 0
    submitted: List[Tuple[Any, int, int, int]] = []
    for point, epoch in jobs:
        rid = point.run_id
        if store.gram_complete(gram_store, rid, epoch):
            continue
        n = point.n_samples
        g = store.ensure_gram(gram_store, rid, epoch, n, block_size,
                              attrs={"engine": job.settings.engine, "precision": exp.gram_precision, "run_id": rid,
                                     "epoch": epoch, "point": point.as_dict(),
                                     "rank_bound": _rank_bound(job.train_store, rid)})
        done = store.blocks_done(g)
        to_finalize.append((point, epoch))
        for bi, bj in store.upper_blocks(n, block_size):
            n_blocks_total += 1
            if done[bi, bj]:
                n_blocks_skipped += 1
                continue
            submitted.append((point, epoch, bi, bj))
    log(f"[assemble_gram] {len(jobs)} Gram matrices ({len(jobs) - len(to_finalize)} already complete); "
        f"{n_blocks_total} blocks to check, {n_blocks_skipped} already done, {len(submitted)} to compute")
    from distributed import as_completed

    n_done = 0
    it = iter(submitted)
    ac = as_completed()

    def submit_next() -> bool:
        try:
            point, epoch, bi, bj = next(it)
        except StopIteration:
            return False
        fut = client.submit(gram_block, job, point, int(epoch), int(bi), int(bj), retries=retries, pure=False,
                            key=f"gram-{point.run_id}-e{epoch}-b{bi}-{bj}")
        ac.add(fut)
        return True

    for _ in range(max_in_flight):
        if not submit_next():
            break
    last = time.time()
    for fut in ac:
        fut.result()  # raises if the block failed after its retries
        n_done += 1
        submit_next()
        if time.time() - last > 5 or n_done == len(submitted):
            el = time.time() - t0
            log(f"[assemble_gram] {n_done}/{len(submitted)} blocks, elapsed {el:.0f}s, "
                f"eta {el / max(n_done, 1) * (len(submitted) - n_done):.0f}s")
            last = time.time()
    t_blocks = time.time() - t0
    if submitted:  # the workers' kept factor buffers (up to 2 GiB each) are not needed by the spectra
        from ..core.ntk_structured import release_all_workspaces

        client.run(release_all_workspaces)
    lams = []
    t_spec = time.time()
    for point, epoch in to_finalize:  # the spectra go to the store, not the log
        g = store.ensure_gram(gram_store, point.run_id, epoch, point.n_samples, block_size)
        ev = finalize_gram(g, provenance, client=client, settings=spectrum, log=log)
        lams.append((float(ev[0]), float(ev[-1])))
    if lams:
        lo, hi = min(a for a, _ in lams), max(b for _, b in lams)
        log(f"[assemble_gram] {len(lams)} Gram matrices finalised (spectra in the store); "
            f"lambda_min >= {lo:.4g}, lambda_max <= {hi:.4g}")
    return {"grams": len(jobs), "finalized": len(to_finalize), "blocks_computed": len(submitted),
            "blocks_skipped": n_blocks_skipped, "seconds": time.time() - t0, "seconds_blocks": t_blocks,
            "seconds_eigenvalues": time.time() - t_spec}
