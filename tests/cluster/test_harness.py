"""The test clusters of tests/clusters.py are real: separate nodes, processes, jobs."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import psutil
import pytest

from clusters import dask_external, ray_two_nodes, slurm_available

pytestmark = pytest.mark.slow

IN_CI = os.environ.get("CI", "").lower() == "true"


def _cluster_pids(marker: str) -> set[int]:
    return {
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if marker in " ".join(p.info["cmdline"] or ())
    }


def test_ray_two_nodes_runs_tasks_on_both_nodes(tmp_path):
    import ray
    with ray_two_nodes(tmp_path) as address:
        assert address.startswith("127.0.0.1:")
        port = address.rsplit(":", 1)[1]
        assert os.environ["RAY_AUTH_MODE"] == "disabled"
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        try:
            alive = [n for n in ray.nodes() if n["Alive"]]
            assert len(alive) == 2
            assert ray.cluster_resources().get("CPU") == 2

            @ray.remote(num_cpus=1)
            def where() -> str:
                time.sleep(1)
                return ray.get_runtime_context().get_node_id()

            t0 = time.monotonic()
            node_ids = ray.get([where.remote() for _ in range(4)], timeout=60)
            elapsed = time.monotonic() - t0
        finally:
            ray.shutdown()
        assert len(set(node_ids)) == 2, node_ids
        assert set(node_ids) <= {n["NodeID"] for n in alive}
        # 4 one-second tasks on 2 one-CPU nodes: two rounds, never all in parallel.
        assert elapsed >= 2.0
        assert _cluster_pids(f"127.0.0.1:{port}"), "cluster processes vanished while in use"
    # Torn down: nothing that talks to this GCS survives.
    time.sleep(0.5)
    assert not _cluster_pids(f"127.0.0.1:{port}")


def test_dask_external_has_worker_processes():
    import distributed
    with dask_external(n_workers=2) as address:
        assert address.startswith("tcp://127.0.0.1:")
        with distributed.Client(address, timeout=10) as client:
            pids = client.run(os.getpid)
            assert len(pids) == 2
            assert len(set(pids.values())) == 2
            assert os.getpid() not in pids.values()
            assert sum(client.nthreads().values()) == 2
            # work really runs there
            assert client.submit(lambda: os.getpid(), pure=False).result(timeout=30) in pids.values()
        worker_pids = set(pids.values())
    assert not any(psutil.pid_exists(pid) for pid in worker_pids)


def test_slurm_runs_a_batch_job(tmp_path):
    if shutil.which("sinfo") is None:
        if IN_CI:
            pytest.fail("CI=true but SLURM is not installed: run .ci/slurm-up.sh first")
        pytest.skip("SLURM not installed (sinfo missing); run .ci/slurm-up.sh as root")
    assert slurm_available(), "sinfo is installed but slurmctld does not answer (run .ci/slurm-up.sh)"
    out = tmp_path / "job-%j.out"
    res = subprocess.run(
        ["sbatch", "--parsable", "--wait", "--time=1", "--mem=100", "-c", "1",
         f"--chdir={tmp_path}", f"--output={out}", "--job-name=tfconv-test", "--wrap", "echo hi"],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 0, res.stderr
    job_id = int(res.stdout.strip().split(";")[0])  # "<id>" or "<id>;<cluster>"
    assert job_id > 0
    log = tmp_path / f"job-{job_id}.out"
    assert log.read_text().strip() == "hi"
