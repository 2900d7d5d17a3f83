"""The workflow and multi-node Ray on a real SLURM (no mocks).

Needs a running SLURM (``sudo bash .ci/slurm-up.sh`` starts a two-node one; ``.ci/run`` does it in CI).
Outside CI the tests skip when there is none; with ``CI=true`` they fail instead.

* ``test_workflow_through_slurm_executor``: the small test config end to end with
  ``--workflow-profile workflow/profiles/slurm`` (``executor: slurm``): every rule job is its own
  SLURM batch job (one SLURM job id per rule job, collected from ``.snakemake/slurm_logs``). With
  two SLURM nodes, train_grid is a two-node job with ``ray.slurm_allocation: true`` (a Ray head
  and a Ray worker node, runs on both node ids); with one node, a local Ray cluster inside its
  batch job. assemble_gram's Dask cluster is a local one inside its job.
* ``test_ray_in_slurm_allocation``: an sbatch job runs the grid through
  ``tfconv.pipeline.steps.train_grid`` with ``ray: {slurm_allocation: true}``, i.e. through
  ``tfconv.cluster.ray_slurm.ray_in_slurm_allocation`` (srun'd ``ray start --head --block``; a
  one-node job, so the cluster is the head alone -- tests/cluster/test_slurm_nodes.py runs the same on
  two nodes), then a grid that raises inside a second
  allocation cluster; after each, no process of that Ray cluster and no srun step of it remain.

Each test records what it saw (SLURM job ids, node names, Ray node ids, wall time) in
``<tmp>/slurm_record.json`` and, when ``TFCONV_TEST_RECORD_DIR`` is set, in that folder too.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from clusters import job_info, record, require_slurm as _require_slurm, slurm_nodes

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SMALL = ROOT / "tests" / "configs" / "config_small.yaml"
PROFILE = ROOT / "workflow" / "profiles" / "slurm"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
            "DEADLINE", "PREEMPTED"}


@pytest.fixture(autouse=True)
def require_slurm():
    _require_slurm()


def _env() -> dict:
    # auth off for the Ray clusters of these subprocesses (set here, not in the README's or CI's
    # command); the default token mode is tested in tests/cluster/test_loopback.py
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1")
    for k in ("RAY_ADDRESS", "DASK_SCHEDULER_ADDRESS"):
        env.pop(k, None)  # the jobs must start their own clusters (sbatch passes --export=ALL)
    return env






def _sbatch_and_wait(args: list, timeout_s: float) -> tuple[str, dict]:
    """Submit, then poll scontrol every 0.5 s (``sbatch --wait`` polls far more slowly)."""
    res = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True, env=_env(), timeout=60)
    assert res.returncode == 0, f"sbatch failed: {res.stderr}"
    job_id = res.stdout.strip().split(";")[0]
    deadline = time.time() + timeout_s
    try:
        while True:
            info = job_info(job_id)
            if info.get("JobState") in TERMINAL:
                return job_id, info
            if time.time() > deadline:
                raise AssertionError(f"SLURM job {job_id} not finished after {timeout_s:.0f}s: {info.get('JobState')}")
            time.sleep(0.5)
    finally:
        if job_info(job_id).get("JobState") not in TERMINAL:
            subprocess.run(["scancel", job_id], capture_output=True, timeout=30)


def _processes_mentioning(needle: str) -> list:
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        with_cmd = " ".join(p.info["cmdline"] or ())
        if needle in with_cmd and p.info["pid"] != os.getpid():
            found.append(f"{p.info['pid']}: {with_cmd[:160]}")
    return found


# --------------------------------------------------------------------------------------------------
def _rule_job_counts(text: str) -> dict:
    """The "Job stats" table Snakemake prints before running: {rule: count}, without `all`/total."""
    m = re.search(r"Job stats:\n(.*?)\n\n", text, re.S)
    assert m, "no 'Job stats' table in Snakemake's output"
    counts = {}
    for line in m.group(1).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("all", "total"):
            counts[parts[0]] = int(parts[1])
    return counts


def test_workflow_through_slurm_executor(tmp_path):
    wd = tmp_path / "wf"
    wd.mkdir()
    # With two nodes (the SLURM of .ci/slurm-up.sh): train_grid is a two-node SLURM job and trains on
    # a Ray cluster over both (ray.slurm_allocation); with one node, a local Ray cluster in its job.
    n_nodes = min(2, len(slurm_nodes()))
    overlay = tmp_path / "nodes.yaml"
    overlay.write_text(json.dumps({"ray": {"slurm_allocation": n_nodes > 1},
                                   "resources": {"train_grid": {"nodes": n_nodes, "threads": 1}}}))
    cmd = ["timeout", "-k", "10", "480", str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"),
           "--directory", str(wd), "--configfile", str(SMALL), str(overlay), "--workflow-profile", str(PROFILE),
           "--jobs", "4", "--latency-wait", "5",
           # poll SLURM early (the plugin then adds 10 s per round in which no job finished)
           "--seconds-between-status-checks", "3", "--slurm-init-seconds-before-status-checks", "3"]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    seconds = time.time() - t0
    out = proc.stdout + proc.stderr
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", out))
    try:
        assert proc.returncode == 0, f"snakemake --executor slurm failed ({proc.returncode}):\n{out[-12000:]}"
    finally:
        for job_id in submitted.values():  # nothing of this run stays queued after a failure/timeout
            if job_info(job_id).get("JobState") not in TERMINAL:
                subprocess.run(["scancel", job_id], capture_output=True, timeout=30)

    # one SLURM job per rule job, each with its log in .snakemake/slurm_logs/rule_<rule>/...
    counts = _rule_job_counts(out)
    assert counts and sum(counts.values()) >= 7, counts
    logs = sorted((wd / ".snakemake" / "slurm_logs").glob("rule_*/**/*.log"))
    by_rule: dict = {}
    for log in logs:
        rule = log.relative_to(wd / ".snakemake" / "slurm_logs").parts[0][len("rule_"):]
        by_rule.setdefault(rule, []).append(log.stem)
    assert {r: len(ids) for r, ids in by_rule.items()} == counts, (by_rule, counts)
    job_ids = sorted({j for ids in by_rule.values() for j in ids}, key=int)
    assert len(job_ids) == sum(counts.values())
    assert set(job_ids) == set(submitted.values()), (job_ids, submitted)
    jobs = {}
    for job_id in job_ids:
        info = job_info(job_id)
        assert info.get("JobState") == "COMPLETED", (job_id, info.get("JobState"))
        jobs[job_id] = {"rule": next(r for r, ids in by_rule.items() if job_id in ids), "node": info.get("NodeList"),
                        "runtime": info.get("RunTime"), "cpus": info.get("NumCPUs"), "mem": info.get("MinMemoryNode")}

    # the outputs are complete and verified; train_grid ran on a Ray cluster started in its job
    res = wd / "results"
    assert ": OK (checked " in (res / "verify.txt").read_text()
    manifest = json.loads((res / "train" / "grid.json").read_text())
    assert manifest["n_runs"] == 8 and len(manifest["nodes"]) == n_nodes
    train_log = (res / "logs" / "train_grid" / "grid.log").read_text()
    if n_nodes > 1:
        train_job = next(j for j in jobs.values() if j["rule"] == "train_grid")
        assert train_job["node"] == "tfnode[1-2]" or "," in train_job["node"], train_job
        assert re.search(r"Ray cluster at \S+ up in \S+: ALIVE 2 ", train_log), train_log[-3000:]
        assert "Ray cluster of job" in train_log and "stopped" in train_log
    else:
        assert "starting a local Ray cluster" in train_log
    assert (res / "gram" / "grid.json").exists()
    runs_by_node: dict = {}
    for rid, r in sorted(manifest["runs"].items()):
        runs_by_node.setdefault(str(r.get("node_id")), []).append(rid)
    record(tmp_path, "slurm_workflow", {"wall_seconds": round(seconds, 1), "slurm_jobs": jobs,
                                         "ray_node_ids": manifest["nodes"], "ray_runs_by_node": runs_by_node,
                                         "train_grid_nodes": n_nodes})


# --------------------------------------------------------------------------------------------------
_ALLOCATION_JOB = r'''
import json, os, re, subprocess, sys, time
import psutil
from tfconv import store
from tfconv.cluster.ray_grid import GridJob, RayTasks, run_grid
from tfconv.cluster.ray_slurm import default_temp_dir, ray_in_slurm_allocation
import yaml
from tfconv.config import load_workflow
from tfconv.pipeline.steps import make_dataset, train_grid

small, work = sys.argv[1], sys.argv[2]
job = os.environ["SLURM_JOB_ID"]
out = {"job_id": job, "nodelist": os.environ.get("SLURM_JOB_NODELIST"), "ray_address_env": os.environ.get("RAY_ADDRESS")}

def mentioning(needle):
    return [p.pid for p in psutil.process_iter(["pid", "cmdline"])
            if needle in " ".join(p.info["cmdline"] or ()) and p.pid != os.getpid()]

def steps():
    res = subprocess.run(["squeue", "-h", "-s", "-j", job, "-o", "%i %j"], capture_output=True, text=True)
    return [ln for ln in res.stdout.splitlines() if "tfconv-ray" in ln]

raw = yaml.safe_load(open(small))
raw["ray"] = dict(raw.get("ray") or {}, slurm_allocation=True)
raw["results"] = os.path.join(work, "results")
wf = load_workflow(raw)
exp = wf.experiment("grid")
make_dataset(wf, exp.dataset.name)

# 1. the pipeline's train_grid with ray.slurm_allocation: a cluster over this job's nodes
t0 = time.time()
summary = train_grid(wf, "grid", threads=2)
out["train_seconds"] = time.time() - t0
out["summary"] = {k: summary[k] for k in ("n_runs", "nodes", "trained_now")}
root = default_temp_dir()
out["temp_root"] = root
out["left_after_success"] = mentioning(root)
out["steps_after_success"] = steps()
out["temp_root_removed"] = not os.path.exists(root)

# 2. a grid that raises inside an allocation cluster: the cluster must still be torn down
root2 = root + "-fail"
out["temp_root_fail"] = root2
try:
    with ray_in_slurm_allocation(temp_dir=root2, log=print) as address:
        out["address_fail"] = address
        out["pids_during"] = mentioning(root2)
        out["steps_during"] = steps()
        run_grid(GridJob(exp, os.path.join(work, "missing.zarr"), os.path.join(work, "fail.zarr")), exp.points,
                 address=address, tasks=RayTasks(max_retries=0))
    out["raised"] = None
except Exception as exc:  # noqa: BLE001
    out["raised"] = re.sub(r"\x1b\[[0-9;]*m", "", type(exc).__name__ + ": " + str(exc).splitlines()[0])[:200]
def alive(pid):  # a zombie has exited (only its parent has not collected its status yet)
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False

deadline = time.time() + 10
while time.time() < deadline and any(alive(p) for p in out.get("pids_during", [])):
    time.sleep(0.2)
out["left_after_failure"] = mentioning(root2)
out["pids_during_alive_after"] = [p for p in out.get("pids_during", []) if alive(p)]
out["zombies_after"] = [p for p in out.get("pids_during", []) if psutil.pid_exists(p) and not alive(p)]
out["steps_after_failure"] = steps()
out["temp_root_fail_kept"] = os.path.isdir(root2)  # its logs are kept after a failure
json.dump(out, open(os.path.join(work, "result.json"), "w"), indent=1)
'''


def test_ray_in_slurm_allocation(tmp_path):
    work = tmp_path / "alloc"
    work.mkdir()
    script = work / "job.py"
    script.write_text(_ALLOCATION_JOB)
    t0 = time.time()
    job_id, info = _sbatch_and_wait(
        ["--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=2", "--mem=4000", "--time=10",
         "--job-name=tfconv-ray-allocation", f"--chdir={work}", f"--output={work / 'job.out'}",
         "--wrap", f"{sys.executable} {script} {SMALL} {work}"],
        timeout_s=240)
    seconds = time.time() - t0
    log = (work / "job.out").read_text() if (work / "job.out").exists() else ""
    assert info.get("JobState") == "COMPLETED", f"job {job_id}: {info.get('JobState')}\n{log[-6000:]}"
    r = json.loads((work / "result.json").read_text())
    assert r["ray_address_env"] is None
    # 1. trained on the allocation's Ray cluster (head node only: this SLURM has one node)
    assert r["summary"]["n_runs"] == 8 and len(r["summary"]["trained_now"]) == 8
    assert len(r["summary"]["nodes"]) == 1
    assert "[ray-slurm] job" in log and "Ray cluster at" in log and "stopped" in log
    assert r["left_after_success"] == [] and r["steps_after_success"] == []
    assert r["temp_root_removed"]
    # 2. the failing grid raised, and everything its cluster ran is gone
    assert r["raised"], "the grid on a missing data store should have raised"
    assert r["pids_during"] and r["steps_during"], "the allocation cluster was not seen running"
    assert r["left_after_failure"] == [] and r["pids_during_alive_after"] == [] and r["steps_after_failure"] == []
    assert r["temp_root_fail_kept"]
    # and from outside the job too
    for root in (r["temp_root"], r["temp_root_fail"]):
        assert _processes_mentioning(root) == []
    shutil.rmtree(r["temp_root_fail"], ignore_errors=True)  # one-node SLURM: the job's /tmp is ours
    record(tmp_path, "slurm_ray_allocation", {
        "wall_seconds": round(seconds, 1), "slurm_job_id": job_id, "slurm_nodes": info.get("NodeList"),
        "ray_node_ids": r["summary"]["nodes"], "train_seconds": round(r["train_seconds"], 1),
        "failing_grid_raised": r["raised"], "cluster_pids_during_failing_grid": len(r["pids_during"]),
        "srun_steps_during_failing_grid": r["steps_during"]})


# --------------------------------------------------------------------------------------------------
def test_dask_jobqueue_workers_are_slurm_jobs(tmp_path):
    """`dask: {jobqueue: ...}` obtains its workers as SLURM batch jobs (dask_jobqueue.SLURMCluster)."""
    from tfconv.cluster.dask_gram import dask_client

    cfg = {"n_workers": 1, "jobqueue": {"cores": 1, "memory": "1GB", "walltime": "00:05:00", "n_jobs": 1,
                                        "job_extra_directives": [f"--output={tmp_path}/dask-worker-%j.out"]}}
    t0 = time.time()
    with dask_client(cfg) as client:
        where = client.submit(lambda: (os.environ.get("SLURM_JOB_ID"), os.uname().nodename), pure=False).result(timeout=60)
    seconds = time.time() - t0
    assert where[0] and where[0].isdigit(), f"the task did not run inside a SLURM job: {where}"
    info = job_info(where[0])
    assert info.get("JobName", "").startswith("dask-worker"), info.get("JobName")
    deadline = time.time() + 30  # closing the cluster cancels its worker jobs
    while job_info(where[0]).get("JobState") not in TERMINAL and time.time() < deadline:
        time.sleep(0.5)
    assert job_info(where[0]).get("JobState") in TERMINAL
    record(tmp_path, "slurm_dask_jobqueue", {"wall_seconds": round(seconds, 1), "slurm_job_id": where[0],
                                              "node": where[1], "job_name": info.get("JobName")})
