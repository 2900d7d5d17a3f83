"""Faults and interruptions, with nothing lost (issue 8).

* The whole workflow is SIGKILLed (its process group, plus every Ray and Dask process it started)
  once during training and once during Gram assembly, then rerun; the results are identical to an
  uninterrupted run, and after each kill every store marked complete is complete and correct.
* A Ray worker process is killed while it trains a grid point: Ray's retries (``ray.max_retries``)
  finish the grid with identical curves; with ``max_retries=0`` the same kill fails the grid
  (so it is the retries, not luck).
* A Dask worker process is killed while it computes a Gram block: the assembly finishes and every
  Gram equals the uninterrupted one exactly.
* Diverged runs are recorded with their status, shown as such in figures and tables and do not stop
  the rest of the grid.

The uninterrupted reference is computed in-process with the same functions the Ray and Dask tasks
run (tests/cluster/test_determinism.py shows in-process and Ray training are bitwise identical).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml

from tfconv import runner, store
from tfconv.cluster.dask_spectra import finalize_gram
from tfconv.config import load_workflow
from tfconv.store import Results
from tfconv.pipeline import steps
from timeouts import hard_timeout  # noqa: E402 (tests/ is on sys.path)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# 16 runs on 12 samples; width 8 mostly converges (about 0.7 s of training each), width 32 diverges
# with step size 2 (within 3-6 epochs), so the grid has both. Gram: exact engine, 3 blocks per matrix.
FAULT_CONFIG = {
    "results": "results",
    "datasets": {"synth": {"kind": "synthetic", "n_samples": 12, "d_s": 4, "d": 8}},
    "experiments": {
        "grid": {
            "description": "fault-injection grid (some runs diverge)",
            "dataset": "synth",
            "grid": {"width": [8, 32], "scaling": ["inv_sqrt", "inv"], "init": ["lecun"], "seed": [0, 1, 2, 3]},
            "train": {"step_size": 2.0, "epochs": 600, "checkpoint_epochs": [0, 300, 600]},
            "analyses": ["loss_per_width"],
        }
    },
    "gram": {"engine": "exact", "block_size": 6, "chunk_size": 6},
    "dask": {"n_workers": 2, "retries": 3},
    "ray": {"max_retries": 3},
    "resources": {"train_grid": {"threads": 2}, "assemble_gram": {"threads": 2}},
}
EXP = "grid"


# ------------------------------------------------------------------------------------------------
# the uninterrupted reference, computed in-process
# ------------------------------------------------------------------------------------------------

class Reference:
    def __init__(self, root: Path):
        import torch

        self.root = root
        cfg = dict(FAULT_CONFIG, results=str(root))
        self.wf = load_workflow(cfg)
        self.exp = self.wf.experiment(EXP)
        self.points = self.exp.points
        self.data = str(self.wf.results.data("synth"))
        self.train = str(self.wf.results.train(EXP))
        self.gram = str(self.wf.results.gram(EXP))
        threads = torch.get_num_threads()
        t0 = time.time()
        steps.make_dataset(self.wf, "synth")
        store.ensure_train_store(self.train, {"points": [p.as_dict() for p in self.points]})
        for p in self.points:
            runner.train_point(self.exp, p, self.data, self.train, threads=1)
        self.train_seconds = time.time() - t0
        self.runs = {p.run_id: store.read_run(self.train, p.run_id) for p in self.points}
        g = self.wf.gram
        self.settings = runner.GramSettings(g["engine"], g["block_size"], g["chunk_size"], threads=1)
        job = runner.GramJob(self.exp, self.data, self.train, self.gram, self.settings)
        self.grams = {}
        self.blocks_per_gram = len(store.upper_blocks(12, g["block_size"]))
        t0 = time.time()
        for p in self.points:
            rid = p.run_id
            for e in self.runs[rid]["attrs"]["checkpoint_epochs"]:
                grp = store.ensure_gram(self.gram, rid, e, 12, g["block_size"])
                for bi, bj in store.upper_blocks(12, g["block_size"]):
                    runner.gram_block(job, p, e, bi, bj)
                finalize_gram(grp)
                self.grams[(rid, e)] = store.read_gram(self.gram, rid, e)
        self.gram_seconds = time.time() - t0
        torch.set_num_threads(threads)
        self.n_diverged = sum(r["attrs"]["status"] == "diverged" for r in self.runs.values())

    @property
    def total_blocks(self) -> int:
        return len(self.grams) * self.blocks_per_gram


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    ref = Reference(tmp_path_factory.mktemp("reference") / "results")
    assert 0 < ref.n_diverged < len(ref.points), "the fault grid should hold diverged and converged runs"
    print(f"reference: training {ref.train_seconds:.1f}s, {len(ref.grams)} Grams {ref.gram_seconds:.1f}s")
    return ref


def assert_run_equal(run, ref_run, rid):
    assert sorted(run["curves"]) == sorted(ref_run["curves"]), rid
    for k, v in ref_run["curves"].items():
        assert run["curves"][k].tobytes() == v.tobytes(), f"{rid}: curve {k} differs from the uninterrupted run"
    assert sorted(run["checkpoints"]) == sorted(ref_run["checkpoints"]), rid
    for e, ws in ref_run["checkpoints"].items():
        for name, w in ws.items():
            assert run["checkpoints"][e][name].tobytes() == w.tobytes(), f"{rid}: checkpoint {e}/{name} differs"
    for k in ("status", "diverged_epoch", "point"):
        assert run["attrs"][k] == ref_run["attrs"][k], (rid, k)


def check_store_state(res: Path, ref: Reference) -> dict:
    """After a kill: everything marked complete is complete and equal to the reference; every block
    marked done holds the reference's values; manifests exist only when everything is complete."""
    import zarr

    out = {"runs_complete": 0, "grams_complete": 0, "blocks_done": 0}
    results = Results(res)
    ds_path = results.data("synth")
    if ds_path.exists():
        ds = store.read_dataset(ds_path, verify=True)  # a published dataset store is always complete
        assert ds.X.tobytes() == store.read_dataset(ref.data).X.tobytes()
    ts = results.train(EXP)
    for rid in store.list_runs(ts):  # staging files of killed writers are never listed nor read
        assert store.run_complete(ts, rid), f"run file {store.run_path(ts, rid)} is published but not complete"
        assert_run_equal(store.read_run(ts, rid), ref.runs[rid], rid)
        out["runs_complete"] += 1
    gs = results.gram(EXP)
    for (rid, e), (K_ref, ev_ref) in ref.grams.items():
        p = store.gram_path(gs, rid, e)
        if not store.exists(p / "blocks_done"):
            assert not store.gram_complete(gs, rid, e)
            continue
        g = zarr.open_group(str(p), mode="r")
        done = store.blocks_done(g)
        K = np.asarray(g["K"][...])
        ranges = store.block_ranges(12, FAULT_CONFIG["gram"]["block_size"])
        for bi, bj in zip(*np.nonzero(done)):
            (r0, r1), (c0, c1) = ranges[bi], ranges[bj]
            assert K[r0:r1, c0:c1].tobytes() == K_ref[r0:r1, c0:c1].tobytes(), f"{rid} e{e} block {bi},{bj}"
            out["blocks_done"] += 1
        if store.gram_complete(gs, rid, e):
            assert done[np.triu_indices(done.shape[0])].all(), f"{rid} e{e} marked complete with blocks missing"
            K2, ev = store.read_gram(gs, rid, e)
            assert K2.tobytes() == K_ref.tobytes() and ev.tobytes() == ev_ref.tobytes(), f"{rid} e{e}"
            out["grams_complete"] += 1
    if results.train_manifest(EXP).exists():
        assert out["runs_complete"] == len(ref.points), "train manifest written before every run was complete"
    if results.gram_manifest(EXP).exists():
        assert out["grams_complete"] == len(ref.grams), "gram manifest written before every Gram was complete"
    return out


# ------------------------------------------------------------------------------------------------
# running and killing the workflow
# ------------------------------------------------------------------------------------------------

def _env():
    # auth off for the Ray clusters of these subprocesses (set here, not in the README's or CI's
    # command); the default token mode is tested in tests/cluster/test_loopback.py
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1", RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    return env


def _snakemake_cmd(wd: Path, cfg: Path, *args: str):
    return [str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), "--directory", str(wd),
            "--configfile", str(cfg), *args]


def _kill_all(procs) -> list:
    """SIGKILL every process in `procs` that is still running; returns those that survived."""
    alive = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                p.kill()
                alive.append(p)
    _, still = psutil.wait_procs(alive, timeout=10)
    return [p for p in still if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def run_until(wd: Path, cfg: Path, args, kill_when, timeout: float, log_name: str):
    """Run snakemake in its own session; SIGKILL it and all its descendants once `kill_when()`
    returns a description. Returns (description or None, return code, log text)."""
    log_path = wd / f"{log_name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(_snakemake_cmd(wd, cfg, *args), stdout=log, stderr=subprocess.STDOUT,
                                env=_env(), start_new_session=True)
    seen: dict = {}
    killed = None
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None:
            with contextlib.suppress(psutil.NoSuchProcess):
                for c in psutil.Process(proc.pid).children(recursive=True):
                    seen.setdefault(c.pid, c)  # Ray daemons and Dask workers, collected before the kill
            killed = kill_when()
            if killed:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"snakemake ({log_name}) still running after {timeout:.0f} s")
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        survivors = _kill_all(list(seen.values()))
        proc.wait(timeout=30)
    assert not survivors, f"processes survived the kill: {survivors}"
    return killed, proc.returncode, log_path.read_text(errors="replace")


def run_to_end(wd: Path, cfg: Path, args, timeout: float, log_name: str):
    killed, rc, text = run_until(wd, cfg, args, lambda: None, timeout, log_name)
    return rc, text


def _complete_runs(res: Path) -> int:
    ts = Results(res).train(EXP)
    return sum(store.run_complete(ts, rid) for rid in store.list_runs(ts))


def _blocks_done(res: Path) -> int:
    return sum(1 for _ in Results(res).gram(EXP).glob("*/epoch=*/blocks_done/c/*/*"))


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, reference):
    """The workflow killed during training, rerun and killed during Gram assembly, rerun to the end."""
    wd = tmp_path_factory.mktemp("interrupted")
    cfg = wd / "config.yaml"
    cfg.write_text(yaml.safe_dump(FAULT_CONFIG, sort_keys=False))
    res = wd / "results"
    n_runs, n_blocks = len(reference.points), reference.total_blocks
    record = {"t0": time.time()}

    def during_training():
        c = _complete_runs(res)
        return f"{c}/{n_runs} runs complete" if 2 <= c <= n_runs - 4 else None

    record["kill1"], rc, log1 = run_until(wd, cfg, ["--cores", "2", f"results/gram/{EXP}.json"],
                                          during_training, 240, "run1-killed-in-training")
    assert record["kill1"], f"training finished before it could be killed:\n{log1[-3000:]}"
    record["state1"] = check_store_state(res, reference)
    rc_unlock, _ = run_to_end(wd, cfg, ["--unlock"], 120, "unlock1")
    assert rc_unlock == 0

    def during_gram():
        c = _blocks_done(res)
        return f"{c}/{n_blocks} blocks done" if 8 <= c <= n_blocks - 12 else None

    record["kill2"], rc, log2 = run_until(wd, cfg, ["--cores", "2", "--rerun-incomplete", f"results/gram/{EXP}.json"],
                                          during_gram, 300, "run2-killed-in-gram")
    assert record["kill2"], f"Gram assembly finished before it could be killed:\n{log2[-3000:]}"
    record["state2"] = check_store_state(res, reference)
    record["gram_manifest_after_kill2"] = Results(res).gram_manifest(EXP).exists()
    rc_unlock, _ = run_to_end(wd, cfg, ["--unlock"], 120, "unlock2")
    assert rc_unlock == 0
    rc, log3 = run_to_end(wd, cfg, ["--cores", "2", "--rerun-incomplete"], 400, "run3-to-the-end")
    assert rc == 0, f"the rerun after two kills failed:\n{log3[-6000:]}"
    record["state3"] = check_store_state(res, reference)
    record["seconds"] = time.time() - record["t0"]
    print(f"interrupted workflow: kill 1 at {record['kill1']}, kill 2 at {record['kill2']}, "
          f"{record['seconds']:.0f}s in all")
    return wd, record


@hard_timeout(900)
def test_sigkill_in_training_then_rerun_loses_nothing(interrupted, reference):
    wd, rec = interrupted
    # after the kill in training: some runs published (all complete and correct), no Gram yet
    assert 2 <= rec["state1"]["runs_complete"] < len(reference.points)
    assert rec["state1"]["grams_complete"] == 0
    # the rerun trained only what was missing
    res = Results(wd / "results")
    manifest = json.loads(res.train_manifest(EXP).read_text())
    assert manifest["n_runs"] == len(reference.points)
    log = res.log("train_grid", EXP).read_text()
    assert f"{rec['state1']['runs_complete']} already complete" in log


@hard_timeout(900)
def test_sigkill_in_gram_assembly_then_rerun_loses_nothing(interrupted, reference):
    wd, rec = interrupted
    assert rec["state2"]["runs_complete"] == len(reference.points)
    assert 8 <= rec["state2"]["blocks_done"] < reference.total_blocks
    assert rec["state2"]["grams_complete"] == 0  # finalised (eigenvalues, complete) only after all blocks
    assert not rec["gram_manifest_after_kill2"]
    log = Results(wd / "results").log("assemble_gram", EXP).read_text()
    assert "already done" in log


@hard_timeout(900)
def test_rerun_after_kills_is_identical_to_uninterrupted(interrupted, reference):
    wd, rec = interrupted
    res = wd / "results"
    st = rec["state3"]  # compares every curve, checkpoint (bitwise) and Gram, eigenvalues (exactly)
    assert st == {"runs_complete": len(reference.points), "grams_complete": len(reference.grams),
                  "blocks_done": reference.total_blocks}
    assert ": OK (checked " in Results(res).verify_report.read_text()
    proc = subprocess.run([str(BIN / "tfconv"), "verify", str(res)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@hard_timeout(900)
def test_diverged_runs_recorded_shown_and_grid_continues(interrupted, reference):
    import xarray as xr

    wd, _ = interrupted
    res = Results(wd / "results")
    diverged = {rid for rid, r in reference.runs.items() if r["attrs"]["status"] == "diverged"}
    manifest = json.loads(res.train_manifest(EXP).read_text())
    assert manifest["n_diverged"] == len(diverged) > 0
    assert {rid for rid, r in manifest["runs"].items() if r["status"] == "diverged"} == diverged
    assert all(manifest["runs"][rid]["diverged_epoch"] > 0 for rid in diverged)
    # the rest of the grid finished: every converged run has its full budget (or stopped at the float floor,
    # NaN after its stop_epoch) and every checkpoint
    for rid, r in reference.runs.items():
        if rid not in diverged:
            stop = int(r["attrs"].get("stop_epoch", -1))
            loss = np.asarray(r["curves"]["loss"])
            assert np.all(np.isfinite(loss[: stop + 1] if stop >= 0 else loss)), rid
            assert stop < 0 or np.all(np.isnan(loss[stop + 1:])), rid
            assert r["attrs"]["checkpoint_epochs"] == [0, 300, 600]
    xds = xr.open_zarr(res.aggregate(EXP)).load()
    assert int((xds["status"] == "diverged").sum()) == len(diverged)
    fig_csv = res.figure(EXP, "loss_per_width", "csv").read_text()
    assert "diverged_run" in fig_csv  # drawn dashed with an x, listed as such in the figure's numbers
    finding = res.figure(EXP, "loss_per_width", "finding").read_text()
    assert "run(s) diverged (excluded from fits)" in finding
    claims = res.claims.read_text()
    assert "diverged" in claims


# ------------------------------------------------------------------------------------------------
# worker faults
# ------------------------------------------------------------------------------------------------

def _my_descendants():
    with contextlib.suppress(psutil.NoSuchProcess):
        return psutil.Process(os.getpid()).children(recursive=True)
    return []


class Killer(threading.Thread):
    """Kill (SIGKILL) one process chosen by `pick()` once it returns one; remembers what it killed."""

    def __init__(self, pick, poll=0.05, limit=240):
        super().__init__(daemon=True)
        self.pick, self.poll, self.limit = pick, poll, limit
        self.killed = None
        self.stop = threading.Event()

    def run(self):
        deadline = time.monotonic() + self.limit
        while not self.stop.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                victim = self.pick()
                if victim is not None:
                    desc = " ".join(victim.cmdline())[:80]
                    victim.kill()
                    self.killed = (victim.pid, desc)
                    return
            time.sleep(self.poll)


def _ray_worker_training(min_age: float = 0.3):
    """A Ray worker process of this test's cluster that is running train_point for `min_age` s."""
    for p in _my_descendants():
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            cmd = p.cmdline()
            if cmd and cmd[0].startswith("ray::train_point"):
                first = _ray_worker_training.seen.setdefault(p.pid, time.monotonic())
                if time.monotonic() - first >= min_age:
                    return p
    return None


_ray_worker_training.seen = {}


def _train_with_worker_kill(reference, tmp, points, max_retries):
    from tfconv.cluster.ray_grid import GridJob, RayTasks, run_grid

    train = Results(tmp).train(EXP)
    _ray_worker_training.seen.clear()
    killer = Killer(_ray_worker_training)
    killer.start()
    try:
        results = run_grid(GridJob(reference.exp, reference.data, str(train), threads_per_run=1), points,
                           address=None, num_cpus=2, tasks=RayTasks(max_retries=max_retries), log=lambda m: None)
    finally:
        killer.stop.set()
        killer.join(10)
    return results, train, killer.killed


@hard_timeout(300)
def test_ray_worker_killed_mid_grid_is_retried(reference, tmp_path, monkeypatch):
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # auth off in this process: Ray fixes its auth mode once per process, and this session's other Ray
    # tests join `ray start` clusters started with RAY_AUTH_MODE=disabled (tests/clusters.py); the
    # default token mode is checked in a process of its own (tests/cluster/test_loopback.py).
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    points = [p for p in reference.points if p["width"] == 8][:6]  # the slow (converging) points
    # without retries the same fault fails the grid: surviving it below is the retries' doing
    with pytest.raises((ray.exceptions.WorkerCrashedError, ray.exceptions.RayTaskError)):
        _, _, killed0 = _train_with_worker_kill(reference, tmp_path / "no-retries", points, max_retries=0)
    assert not ray.is_initialized()
    results, train, killed = _train_with_worker_kill(reference, tmp_path / "retries", points, max_retries=3)
    assert killed is not None, "no Ray worker was seen training, so none was killed"
    assert not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).status() == psutil.STATUS_ZOMBIE
    assert sorted(r["run_id"] for r in results) == sorted(p.run_id for p in points)
    for p in points:
        rid = p.run_id
        assert_run_equal(store.read_run(train, rid), reference.runs[rid], rid)
    assert not [rid for rid in store.list_runs(train) if not store.run_complete(train, rid)]
    print(f"killed Ray worker {killed[0]} ({killed[1]}); the grid finished after the retry")


@hard_timeout(300)
def test_dask_worker_killed_mid_assembly_is_retried(reference, tmp_path, monkeypatch):
    import distributed

    from clusters import dask_external
    from tfconv.cluster.dask_gram import assemble_grams

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    gram = Results(tmp_path).gram(EXP)
    job = runner.GramJob(reference.exp, reference.data, reference.train, str(gram), reference.settings)
    with dask_external(n_workers=2) as address, distributed.Client(address, timeout=30) as client:
        pid_of = client.run(os.getpid)  # worker address -> worker process id
        pids_before = set(pid_of.values())

        def busy_worker():
            if sum(1 for _ in gram.glob("*/epoch=*/blocks_done/c/*/*")) < 8:
                return None
            for addr, keys in client.processing().items():
                if keys and addr in pid_of:
                    return psutil.Process(pid_of[addr])
            return None

        killer = Killer(busy_worker, poll=0.1)
        killer.start()
        try:
            info = assemble_grams(job, reference.points, client, retries=3, log=lambda m: None)
        finally:
            killer.stop.set()
            killer.join(10)
        assert killer.killed is not None and killer.killed[0] in pids_before, "no Dask worker was killed"
        client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed worker
        pids_after = set(client.run(os.getpid).values())
        assert killer.killed[0] not in pids_after and len(pids_after) == 2
        print(f"killed Dask worker {killer.killed[0]} mid-assembly; {info['blocks_computed']} blocks assembled")
    assert info["finalized"] == len(reference.grams)
    for (rid, e), (K_ref, ev_ref) in reference.grams.items():
        K, ev = store.read_gram(gram, rid, e)
        assert K.tobytes() == K_ref.tobytes(), f"Gram {rid} epoch {e} differs after the worker was killed"
        assert ev.tobytes() == ev_ref.tobytes()
