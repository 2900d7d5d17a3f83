"""Ray and Dask across the two nodes of a real SLURM cluster (no mocks).

Needs the two-node SLURM of ``.ci/slurm-up.sh`` (nodes tfnode1/tfnode2, each slurmd -- and so every
job process of that node -- in its own network namespace and UTS namespace on a private bridge).
Outside CI the tests skip without two usable nodes; with ``CI=true`` they fail instead.

* ``ray_job`` (one ``sbatch --nodes=2`` job, shared by the Ray tests):
  1. the pipeline's ``train_grid`` with ``ray: {slurm_allocation: true}``: ``ray_slurm`` starts the
     head on tfnode1 and a worker on tfnode2 (the worker loop runs), the grid's runs execute on both
     (node id and host recorded per run), and afterwards no Ray process is left on either node;
  2. the same grid into a second results folder while the test kills every process of the Ray
     worker node (tfnode2, all but slurmd/slurmstepd) mid-grid (once a first run is complete): Ray retries the lost runs on the
     head node and every stored array equals the undisturbed run bit for bit;
  3. a grid that raises inside a third allocation cluster: still nothing left on either node.
* ``test_ray_teardown_on_scancel``: an allocation cluster with tasks running on both nodes is
  ``scancel``ed; nothing of it stays on either node.
* ``dask_run``: the Gram matrices of the trained grid through ``dask_gram.dask_client`` with
  ``dask.jobqueue``: two worker jobs (``--exclusive``, so one per node), the scheduler bound to the
  host's bridge address, each worker to its node's NodeAddr. The Gram equals a single-process
  (single-node) assembly bit for bit; then again into a second store while the test kills the
  tfnode2 worker job's processes mid-assembly: the lost blocks are retried on tfnode1, same bits.

Records (SLURM job ids, node names, Ray node ids with the runs each executed, Dask workers' hosts,
listening sockets) go to ``<tmp>/slurm_record.json`` and ``$TFCONV_TEST_RECORD_DIR/<name>.json``.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from clusters import (
    assert_runs_bitwise_equal,
    job_info,
    kill_node_processes,
    node_listening,
    node_processes,
    record,
    require_slurm,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "tests" / "configs" / "config_small.yaml"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
            "DEADLINE", "PREEMPTED"}
EXP = "grid"
# The small config trains a run in ~0.1 s; 3000 epochs make a run last ~1-2 s, so that both nodes get
# runs and the worker node is killed while it trains one.
EPOCHS = 3000


@pytest.fixture(scope="module")
def nodes():
    """The two nodes; fails under CI=true (skips otherwise) when SLURM or the second node is missing."""
    return require_slurm(min_nodes=2)[:2]


# ------------------------------------------------------------------------------------------ helpers
def _env() -> dict:
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1")
    for k in ("RAY_ADDRESS", "DASK_SCHEDULER_ADDRESS"):
        env.pop(k, None)
    if str(ROOT) not in env.get("PYTHONPATH", "").split(os.pathsep):  # the jobs import this checkout
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env






def _submit(args: list) -> str:
    res = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True, env=_env(), timeout=60, check=False)
    assert res.returncode == 0, f"sbatch failed: {res.stderr}"
    return res.stdout.strip().split(";")[0]


def _wait(job_id: str, timeout_s: float, poll=None) -> dict:
    """Poll scontrol every 0.3 s until the job ends; ``poll()`` runs each round. Cancels on timeout."""
    deadline = time.time() + timeout_s
    try:
        while True:
            info = job_info(job_id)
            if info.get("JobState") in TERMINAL:
                return info
            if time.time() > deadline:
                raise AssertionError(f"SLURM job {job_id} not finished after {timeout_s:.0f}s: {info.get('JobState')}")
            if poll is not None:
                poll()
            time.sleep(0.3)
    finally:
        if job_info(job_id).get("JobState") not in TERMINAL:
            subprocess.run(["scancel", job_id], capture_output=True, timeout=30, check=False)


def _ray_like(cmd: str, name: str) -> bool:
    """A process of a Ray cluster: raylet, gcs_server, Ray workers (ray::...), agents, `ray start`."""
    return (cmd.startswith("ray::") or name in ("raylet", "gcs_server") or "/ray/" in cmd
            or " ray start" in cmd or "/bin/ray " in cmd or "TFCONV_RAY_HEAD_ADDRESS" in cmd)


def _left_on_nodes(nodes, match, wait_s: float = 20.0) -> dict:
    """Processes matching on the nodes, after waiting up to `wait_s` for them to go away."""
    deadline = time.time() + wait_s
    while True:
        left = {n: v for n, v in node_processes(nodes, match).items() if v}
        if not left or time.time() > deadline:
            return left
        time.sleep(0.5)




def _workflow(results: Path, slurm_allocation: bool = True):
    import yaml

    from tfconv.config import load_workflow

    raw = yaml.safe_load(SMALL.read_text())
    raw["ray"] = dict(raw.get("ray") or {}, slurm_allocation=slurm_allocation)
    raw["results"] = str(results)
    raw["experiments"][EXP]["train"].update(epochs=EPOCHS, checkpoint_epochs=[0, 10, EPOCHS])
    return load_workflow(raw)


# ------------------------------------------------------------------------------------------ Ray
_RAY_JOB = r'''
import json, os, re, sys, time
import psutil, yaml
from tfconv import store
from tfconv.cluster.ray_grid import GridJob, RayTasks, run_grid
from tfconv.cluster.ray_slurm import default_temp_dir, ray_in_slurm_allocation
from tfconv.cluster.slurm import allocation_nodes, slurm_node_addresses
from tfconv.config import load_workflow
from tfconv.pipeline.steps import make_dataset, train_grid

small, work, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
job = os.environ["SLURM_JOB_ID"]
nodes = allocation_nodes()
out = {"job_id": job, "nodes": nodes, "node_addresses": slurm_node_addresses(nodes), "driver_host": os.uname().nodename}

def save():
    json.dump(out, open(os.path.join(work, "result.json"), "w"), indent=1)

def workflow(results):
    raw = yaml.safe_load(open(small))
    raw["ray"] = dict(raw.get("ray") or {}, slurm_allocation=True)
    raw["results"] = os.path.join(work, results)
    raw["experiments"]["grid"]["train"].update(epochs=epochs, checkpoint_epochs=[0, 10, epochs])
    return load_workflow(raw)

def runs(wf, summary):  # run id -> (Ray node id, host that trained it)
    ts = wf.results.train("grid")
    out = {}
    for rid, r in summary["runs"].items():
        prov = store.read_run(ts, rid)["attrs"]["provenance"]
        out[rid] = {"node_id": r["node_id"], "host": prov["host"], "created": prov["created"]}
    return out

# 1. undisturbed: the pipeline's train_grid on a cluster over both nodes
wf = workflow("results")
make_dataset(wf, wf.experiment("grid").dataset.name)
t0 = time.time()
s = train_grid(wf, "grid", threads=1)
out["undisturbed"] = {"seconds": time.time() - t0, "nodes": s["nodes"], "trained_now": len(s["trained_now"]),
                      "runs": runs(wf, s), "store": str(wf.results.train("grid"))}
save()
# the test looks at both nodes now (nothing of this cluster may be left); wait for it
open(os.path.join(work, "phase1_done"), "w").write("1")
deadline = time.time() + 60
while not os.path.exists(os.path.join(work, "phase1_checked")) and time.time() < deadline:
    time.sleep(0.2)

# 2. the same grid while the test kills the worker node's processes (it watches this store)
wf2 = workflow("results_fault")
make_dataset(wf2, wf2.experiment("grid").dataset.name)
open(os.path.join(work, "phase2"), "w").write(str(wf2.results.train("grid")))
t0 = time.time()
s2 = train_grid(wf2, "grid", threads=1)
out["fault"] = {"seconds": time.time() - t0, "nodes": s2["nodes"], "trained_now": len(s2["trained_now"]),
                "runs": runs(wf2, s2), "store": str(wf2.results.train("grid"))}
save()

# 3. a grid that raises inside an allocation cluster
exp = wf.experiment("grid")
root = default_temp_dir() + "-fail"
try:
    with ray_in_slurm_allocation(temp_dir=root, log=print) as address:
        out["fail_address"] = address
        out["fail_pids_during"] = [p.pid for p in psutil.process_iter(["cmdline"])
                                   if root in " ".join(p.info["cmdline"] or ())]
        run_grid(GridJob(exp, os.path.join(work, "missing.zarr"), os.path.join(work, "fail.zarr")), exp.points,
                 address=address, tasks=RayTasks(max_retries=0))
    out["raised"] = None
except Exception as exc:  # noqa: BLE001
    out["raised"] = re.sub(r"\x1b\[[0-9;]*m", "", type(exc).__name__ + ": " + str(exc).splitlines()[0])[:200]
out["fail_temp_root"] = root
save()
'''


@pytest.fixture(scope="module")
def ray_job(nodes, tmp_path_factory):
    """Run the three-phase Ray job on both nodes; kill tfnode2's processes during phase 2."""
    work = tmp_path_factory.mktemp("ray2n")
    (work / "job.py").write_text(_RAY_JOB)
    from tfconv import store

    kill = {}
    after_phase = {}

    def poll():
        phase2 = work / "phase2"
        if "undisturbed" not in after_phase and (work / "phase1_done").exists():
            # phase 1 done: what is left of its cluster on the nodes (the job waits for this)
            after_phase["undisturbed"] = _left_on_nodes(nodes, _ray_like, wait_s=10)
            (work / "phase1_checked").write_text("1")
        if kill or not phase2.exists():
            return
        ts = phase2.read_text().strip()
        try:
            done = [r for r in store.list_runs(ts) if store.run_complete(ts, r)]
        except Exception:  # noqa: BLE001 (the store is being created)
            return
        training = node_processes([nodes[1]], lambda cmd, name: cmd.startswith("ray::train_point_task"))[nodes[1]]
        if len(done) >= 1 and training:  # mid-grid, and the worker node is training a run
            kill["runs_complete_at_kill"] = sorted(done)
            kill["listening_before_kill"] = {n: [x for x in node_listening(n) if "slurmd" not in x] for n in nodes}
            kill["killed"] = kill_node_processes(nodes[1])
            kill["time"] = time.time()

    t0 = time.time()
    job_id = _submit(["--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=1", "--mem=4000", "--time=15",
                      "--job-name=tfconv-ray-2nodes", f"--chdir={work}", f"--output={work / 'job.out'}",
                      "--wrap", f"{sys.executable} {work / 'job.py'} {SMALL} {work} {EPOCHS}"])
    info = _wait(job_id, timeout_s=420, poll=poll)
    seconds = time.time() - t0
    log = (work / "job.out").read_text() if (work / "job.out").exists() else ""
    assert info.get("JobState") == "COMPLETED", f"job {job_id}: {info.get('JobState')}\n{log[-8000:]}"
    r = json.loads((work / "result.json").read_text())
    left_after = _left_on_nodes(nodes, _ray_like)
    return {"job_id": job_id, "info": info, "seconds": seconds, "log": log, "r": r, "kill": kill,
            "left_after_job": left_after, "left_after_phase1": after_phase.get("undisturbed"), "work": work}


def _runs_by_node(runs: dict) -> dict:
    by = {}
    for rid, v in sorted(runs.items()):
        by.setdefault(f"{v['host']} {v['node_id']}", []).append(rid)
    return by


def test_ray_grid_spans_both_nodes(nodes, ray_job, tmp_path):
    r, log = ray_job["r"], ray_job["log"]
    u = r["undisturbed"]
    assert r["nodes"] == nodes and r["driver_host"] == nodes[0]
    # the worker loop ran: head on the first node, a worker on the second, both alive
    assert re.search(rf"ALIVE 2 {nodes[0]} {nodes[1]}", log), log[-4000:]
    assert f"worker1@{nodes[1]}" in log
    # the cluster advertised the nodes' SLURM addresses (not loopback)
    for n in nodes:
        assert f"{n}={r['node_addresses'][n]}" in log
        assert not r["node_addresses"][n].startswith("127.")
    assert u["trained_now"] == 8 and len(u["runs"]) == 8
    hosts = {v["host"] for v in u["runs"].values()}
    node_ids = {v["node_id"] for v in u["runs"].values()}
    assert hosts == set(nodes), f"runs executed on {hosts}, not on both nodes {nodes}"
    assert len(node_ids) == 2 and set(u["nodes"]) == node_ids
    # teardown: nothing of the cluster on either node after phase 1 (the job still ran) and at the end
    assert ray_job["left_after_phase1"] == {}, ray_job["left_after_phase1"]
    assert ray_job["left_after_job"] == {}, ray_job["left_after_job"]
    record(tmp_path, "slurm2_ray_grid", {
        "slurm_job_id": ray_job["job_id"], "slurm_nodes": nodes, "node_addresses": r["node_addresses"],
        "ray_runs_by_node": _runs_by_node(u["runs"]), "train_seconds": round(u["seconds"], 1),
        "job_wall_seconds": round(ray_job["seconds"], 1),
        "ray_processes_left_after": ray_job["left_after_job"]})


def test_ray_worker_node_killed_mid_grid(nodes, ray_job, tmp_path):
    r, kill = ray_job["r"], ray_job["kill"]
    assert kill, "the Ray worker node was never seen running phase 2 (no kill happened)"
    assert any("raylet" in k for k in kill["killed"]), kill["killed"]
    assert any("ray::train_point_task" in k for k in kill["killed"]), "no run was in flight on the killed node"
    f, u = r["fault"], r["undisturbed"]
    assert 1 <= len(kill["runs_complete_at_kill"]) < 8, kill["runs_complete_at_kill"]
    assert len(f["runs"]) == 8
    # nothing finished on the killed node after the kill (a run whose store write was under way may
    # land within a second or two); runs finished later ran on the head node only
    import datetime as dt

    def finished(rid):
        return dt.datetime.fromisoformat(f["runs"][rid]["created"]).timestamp()

    t_kill = int(kill["time"])  # "created" has whole seconds
    on_killed = [rid for rid, v in f["runs"].items() if v["host"] == nodes[1]]
    assert all(finished(rid) <= t_kill + 1 for rid in on_killed), (kill["time"], f["runs"])
    late = [rid for rid in f["runs"] if finished(rid) >= t_kill + 2]
    assert late and {f["runs"][rid]["host"] for rid in late} == {nodes[0]}, (kill["time"], f["runs"])
    wf = _workflow(ray_job["work"] / "results")
    assert_runs_bitwise_equal(u["store"], f["store"], wf.experiment(EXP).points)
    assert ray_job["left_after_job"] == {}
    record(tmp_path, "slurm2_ray_node_killed", {
        "slurm_job_id": ray_job["job_id"], "slurm_nodes": nodes,
        "killed_node": nodes[1], "killed_processes": len(kill["killed"]),
        "killed_process_names": sorted({k.split(":", 1)[1].split()[0][:40] for k in kill["killed"]}),
        "runs_complete_at_kill": kill["runs_complete_at_kill"], "runs_finished_after_kill": sorted(late),
        "ray_runs_by_node": _runs_by_node(f["runs"]), "train_seconds": round(f["seconds"], 1),
        "bitwise_equal_to_undisturbed": True, "listening_during_grid": kill["listening_before_kill"]})


def test_ray_teardown_when_grid_raises(nodes, ray_job, tmp_path):
    r = ray_job["r"]
    assert r["raised"], "the grid on a missing data store should have raised"
    assert r["fail_pids_during"], "the failing grid's cluster was not seen running"
    assert ray_job["left_after_job"] == {}
    assert "Ray cluster of job" in ray_job["log"] and ray_job["log"].count("stopped in") >= 3
    record(tmp_path, "slurm2_ray_grid_raises", {
        "slurm_job_id": ray_job["job_id"], "slurm_nodes": nodes, "raised": r["raised"],
        "cluster_pids_during": len(r["fail_pids_during"]), "ray_processes_left_after": ray_job["left_after_job"]})


_SCANCEL_JOB = r'''
import json, os, sys, time
import ray
from tfconv.cluster.ray_slurm import default_temp_dir, ray_in_slurm_allocation
work = sys.argv[1]
with ray_in_slurm_allocation(temp_dir=default_temp_dir() + "-sc", log=print) as address:
    ray.init(address=address, log_to_driver=False)
    @ray.remote(num_cpus=1)
    def hold(path):
        import socket
        open(path, "w").write(socket.gethostname() + " " + ray.get_runtime_context().get_node_id())
        time.sleep(600)
    refs = [hold.remote(os.path.join(work, f"task{i}")) for i in range(2)]
    ray.get(refs)
'''


def test_ray_teardown_on_scancel(nodes, tmp_path):
    work = tmp_path / "sc"
    work.mkdir()
    (work / "job.py").write_text(_SCANCEL_JOB)
    t0 = time.time()
    job_id = _submit(["--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=1", "--mem=3000", "--time=10",
                      "--job-name=tfconv-ray-scancel", f"--chdir={work}", f"--output={work / 'job.out'}",
                      "--wrap", f"{sys.executable} {work / 'job.py'} {work}"])
    tasks = {}
    try:
        deadline = time.time() + 180
        while len(tasks) < 2:
            for f in work.glob("task*"):
                txt = f.read_text().strip()
                if txt:
                    tasks[f.name] = txt
            state = job_info(job_id).get("JobState")
            assert state not in TERMINAL, f"job {job_id} ended early: {state}\n{(work / 'job.out').read_text()[-4000:]}"
            assert time.time() < deadline, f"tasks not running on both nodes: {tasks}"
            time.sleep(0.3)
        during = {n: v for n, v in node_processes(nodes, _ray_like).items() if v}
        t_cancel = time.time()
        subprocess.run(["scancel", job_id], check=True, timeout=30)
        info = _wait(job_id, timeout_s=120)
    finally:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30, check=False)
    left = _left_on_nodes(nodes, _ray_like, wait_s=30)
    seconds_to_clean = time.time() - t_cancel
    log = (work / "job.out").read_text()
    assert {t.split()[0] for t in tasks.values()} == set(nodes), tasks
    assert set(during) == set(nodes), f"the cluster was not running on both nodes: {during}"
    assert info.get("JobState") == "CANCELLED", info.get("JobState")
    assert left == {}, f"left after scancel: {left}"
    record(tmp_path, "slurm2_ray_scancel", {
        "slurm_job_id": job_id, "slurm_nodes": nodes,
        "ray_tasks_running_at_cancel": {t.split()[0]: t.split()[1] for t in tasks.values()},
        "ray_processes_during": {n: len(v) for n, v in during.items()}, "ray_processes_left_after": left,
        "seconds_until_clean": round(seconds_to_clean, 1), "wall_seconds": round(time.time() - t0, 1),
        # did the driver's own teardown start before SLURM killed the job (KillWait)?
        "driver_teardown_started": "[ray-slurm] stopping the Ray cluster" in log,
        "driver_teardown_finished": "stopped in" in log})


# ------------------------------------------------------------------------------------------ Dask
@pytest.fixture(scope="module")
def dask_run(nodes, ray_job, tmp_path_factory):
    """Assemble the trained grid's Grams on dask-jobqueue workers on both nodes (undisturbed, then
    with tfconv's tfnode2 worker killed mid-assembly), and once in a single process."""
    import dask
    from distributed import Client, get_task_stream

    from tfconv import runner, store
    from tfconv.cluster.dask_gram import assemble_grams, dask_client

    work = tmp_path_factory.mktemp("dask2n")
    wf = _workflow(ray_job["work"] / "results")
    exp = wf.experiment(EXP)
    points, gcfg = exp.points, wf.gram
    data, train = str(wf.results.data(exp.dataset.name)), str(wf.results.train(EXP))
    settings = runner.GramSettings(gcfg["engine"], gcfg["block_size"], gcfg["chunk_size"], threads=1)

    def job(gram_store):
        return runner.GramJob(exp, data, train, str(gram_store), settings)

    out = {"work": work, "points": points, "exp": exp}

    # the single-node reference: one worker thread in this process
    t0 = time.time()
    with dask.config.set({"distributed.scheduler.allowed-failures": 3}), \
            Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as c:
        assemble_grams(job(work / "ref.zarr"), points, c, retries=3)
    out["ref_seconds"] = time.time() - t0

    cfg = {"n_workers": 2, "retries": 3, "jobqueue": {
        "cores": 1, "memory": "3GB", "walltime": "00:10:00", "n_jobs": 2, "death_timeout": 30,
        "job_extra_directives": ["--exclusive", f"--output={work}/dask-worker-%j.out"]}}
    t0 = time.time()
    with dask_client(cfg) as client:
        client.wait_for_workers(2, timeout=180)
        where = client.run(lambda: (os.uname().nodename, os.environ.get("SLURM_JOB_ID")))
        out["workers"] = {addr: {"host": h, "slurm_job_id": j} for addr, (h, j) in where.items()}
        out["scheduler"] = client.scheduler.address
        out["listening"] = {n: [x for x in node_listening(n) if "slurmd" not in x] for n in nodes}
        out["start_seconds"] = time.time() - t0
        # undisturbed, both nodes
        t1 = time.time()
        with get_task_stream(client) as ts:
            out["info_a"] = assemble_grams(job(work / "gram_a.zarr"), points, client, retries=3)
        out["seconds_a"] = time.time() - t1
        out["blocks_by_worker_a"] = _blocks_by_worker(ts.data)

        # node loss: kill every process of the tfnode2 worker job once some blocks are done
        gram_b = str(work / "gram_b.zarr")
        kill = {}
        stop = threading.Event()

        def watch():
            while not stop.is_set() and not kill:
                try:
                    done = sum(int(store.blocks_done(store.open_gram(gram_b, p.run_id, e, mode="r")).sum())
                               for p in points for e in exp.gram_epochs)
                except Exception:  # noqa: BLE001 (the store is still being created)
                    done = 0
                if done >= 20:
                    kill["blocks_done_at_kill"] = done
                    kill["killed"] = kill_node_processes(nodes[1])
                    kill["time"] = time.time()
                time.sleep(0.1)

        th = threading.Thread(target=watch, daemon=True)
        th.start()
        t1 = time.time()
        try:
            with get_task_stream(client) as ts:
                out["info_b"] = assemble_grams(job(gram_b), points, client, retries=3)
        finally:
            stop.set()
            th.join(10)
        out["seconds_b"] = time.time() - t1
        out["kill"] = kill
        out["task_stream_b"] = [(str(t["key"]), t["worker"], t["startstops"][0]["start"]) for t in ts.data
                                if str(t["key"]).startswith("gram-") and t.get("startstops")]
    out["jobs_after"] = {a: job_info(w["slurm_job_id"]).get("JobState") for a, w in out["workers"].items()}
    out["total_seconds"] = time.time() - t0
    return out


def _blocks_by_worker(stream) -> dict:
    by = {}
    for t in stream:
        if str(t["key"]).startswith("gram-"):
            by[t["worker"]] = by.get(t["worker"], 0) + 1
    return by


def _assert_grams_bitwise_equal(a, b, exp, points):
    from tfconv import store

    n = 0
    for p in points:
        for e in exp.gram_epochs:
            if not store.gram_complete(a, p.run_id, e):
                continue
            Ka, ea = store.read_gram(a, p.run_id, e)
            Kb, eb = store.read_gram(b, p.run_id, e)
            assert Ka.dtype == Kb.dtype and Ka.tobytes() == Kb.tobytes(), f"{p.run_id} epoch {e}: K differs"
            assert ea.tobytes() == eb.tobytes(), f"{p.run_id} epoch {e}: eigenvalues differ"
            n += 1
    return n


def test_dask_gram_spans_both_nodes(nodes, dask_run, tmp_path):
    d = dask_run
    hosts = {w["host"] for w in d["workers"].values()}
    assert hosts == set(nodes), f"the Dask workers run on {hosts}, not on both nodes"
    by = d["blocks_by_worker_a"]
    assert set(by) == set(d["workers"]), f"blocks ran on {by}, workers {list(d['workers'])}"
    # every server binds its node address: scheduler on the host's bridge address, workers on NodeAddr
    sched_host = d["scheduler"].split("://")[1].rsplit(":", 1)[0]
    assert not sched_host.startswith("127."), d["scheduler"]
    for addr in d["workers"]:
        assert not addr.split("://")[1].startswith("127."), addr
    for n in nodes:
        for line in d["listening"][n]:
            assert not line.startswith(("0.0.0.0:", "*:", "[::]:")), f"{n}: a server listens on all addresses: {line}"
    n = _assert_grams_bitwise_equal(str(d["work"] / "ref.zarr"), str(d["work"] / "gram_a.zarr"), d["exp"], d["points"])
    assert n == d["info_a"]["grams"] > 0
    record(tmp_path, "slurm2_dask_gram", {
        "slurm_job_ids": sorted({w["slurm_job_id"] for w in d["workers"].values()}), "slurm_nodes": nodes,
        "dask_workers": d["workers"], "dask_scheduler": d["scheduler"],
        "dask_blocks_by_worker": {f"{d['workers'][a]['host']} {a}": c for a, c in by.items()},
        "grams_bitwise_equal_to_single_node": n, "assemble_seconds": round(d["seconds_a"], 1),
        "single_node_seconds": round(d["ref_seconds"], 1), "workers_start_seconds": round(d["start_seconds"], 1),
        "listening_on_nodes": d["listening"], "worker_jobs_after_close": d["jobs_after"]})


def test_dask_worker_node_killed_mid_assembly(nodes, dask_run, tmp_path):
    d = dask_run
    kill = d["kill"]
    assert kill, "the tfnode2 worker was never killed (the assembly ended before 20 blocks were seen?)"
    assert any("distributed.cli.dask_worker" in k or "dask" in k for k in kill["killed"]), kill["killed"]
    total = d["info_b"]["blocks_computed"]
    assert 20 <= kill["blocks_done_at_kill"] < total, (kill["blocks_done_at_kill"], total)
    host_of = {a: w["host"] for a, w in d["workers"].items()}
    before = {host_of.get(w) for _, w, start in d["task_stream_b"] if start < kill["time"]}
    after = {host_of.get(w) for _, w, start in d["task_stream_b"] if start > kill["time"] + 1.0}
    assert nodes[1] in before, f"tfnode2 computed no block before the kill: {before}"
    assert after <= {nodes[0]}, f"blocks started after the kill ran on {after}"
    n = _assert_grams_bitwise_equal(str(d["work"] / "ref.zarr"), str(d["work"] / "gram_b.zarr"), d["exp"], d["points"])
    assert n == d["info_b"]["grams"] > 0
    record(tmp_path, "slurm2_dask_node_killed", {
        "slurm_job_ids": sorted({w["slurm_job_id"] for w in d["workers"].values()}), "slurm_nodes": nodes,
        "dask_workers": d["workers"], "killed_node": nodes[1], "killed_processes": len(kill["killed"]),
        "blocks_done_at_kill": kill["blocks_done_at_kill"], "blocks_total": total,
        "blocks_after_kill_on": sorted(h for h in after if h), "grams_bitwise_equal_to_single_node": n,
        "assemble_seconds": round(d["seconds_b"], 1)})


def test_jobqueue_binding_defaults_and_user_choices():
    """Without a choice in the config, scheduler and workers bind one address and no dashboard;
    an `interface`, a scheduler `host` or a worker `--host` in the config is kept as it is."""
    from tfconv.cluster.dask_gram import _jobqueue_binding
    from tfconv.cluster.slurm import node_address

    jq = _jobqueue_binding({"cores": 1, "memory": "1GB"})
    addr = jq["scheduler_options"]["host"]
    assert addr == node_address()
    assert jq["scheduler_options"]["dashboard"] is False and jq["scheduler_options"]["dashboard_address"] == f"{addr}:0"
    args = jq["worker_extra_args"]
    assert args[args.index("--host") + 1] == "$TFCONV_NODE_ADDR" and "--no-dashboard" in args
    assert args[args.index("--dashboard-address") + 1] == "$TFCONV_NODE_ADDR:0"
    assert any("NodeAddr" in line for line in jq["job_script_prologue"])

    assert _jobqueue_binding({"cores": 1, "interface": "ib0"}) == {"cores": 1, "interface": "ib0"}
    jq = _jobqueue_binding({"scheduler_options": {"host": "10.0.0.5"}, "worker_extra_args": ["--host=10.0.0.6"]})
    assert jq["scheduler_options"] == {"host": "10.0.0.5"}
    assert jq["worker_extra_args"] == ["--host=10.0.0.6"] and "job_script_prologue" not in jq
