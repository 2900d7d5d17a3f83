"""Real clusters for tests: Ray (two nodes), Dask (external scheduler), SLURM probe.

Every cluster here is made of separate OS processes started from the same
virtual environment as the test process (the ``bin`` folder next to
``sys.executable``), never from ``PATH``. The context managers wait, with a
bound, until the cluster really has its nodes/workers, and on exit kill what
they started (process groups plus any leftover descendants), so no ``raylet``,
``gcs_server`` or ``dask worker`` is left behind.

Usage::

    from clusters import ray_two_nodes, dask_external, slurm_available  # tests/ is on sys.path

    with ray_two_nodes(tmp_path) as address:      # "127.0.0.1:PORT"
        ray.init(address=address)
        ...
        ray.shutdown()

    with dask_external(n_workers=2) as address:   # "tcp://127.0.0.1:PORT"
        with distributed.Client(address) as client:
            ...
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Iterator, Sequence

import psutil

__all__ = [
    "dask_external",
    "free_port",
    "kill_node_processes",
    "node_listening",
    "node_processes",
    "ray_two_nodes",
    "slurm_available",
    "slurm_nodes",
    "venv_bin",
]

RAY_START_TIMEOUT_S = 60.0
DASK_START_TIMEOUT_S = 60.0


# --------------------------------------------------------------------------- helpers
def venv_bin(name: str) -> str:
    """Path of executable ``name`` in the environment of the running interpreter.

    Uses the folder of ``sys.executable`` without resolving symlinks (a venv's
    ``python`` links to the base interpreter, the scripts live next to the link).
    """
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise FileNotFoundError(
            f"{name!r} not found next to {sys.executable}; install the project "
            "(pip install -c constraints.txt -e '.[dev]') into this environment"
        )
    return str(path)


def free_port() -> int:
    """A TCP port that is free right now on 127.0.0.1 (small race, fine for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (sockets held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class _Proc:
    """A command started in its own session (process group), output to a log file."""

    def __init__(self, name: str, cmd: Sequence[str], log_path: Path, env: dict[str, str]):
        self.name = name
        self.cmd = list(cmd)
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.popen = subprocess.Popen(
            self.cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # own process group: killpg reaches the daemons
        )
        self.pid = self.popen.pid
        self._seen: dict[int, psutil.Process] = {}

    def remember_descendants(self) -> None:
        """Record current descendants; daemons re-parented later are still found."""
        try:
            for child in psutil.Process(self.pid).children(recursive=True):
                self._seen.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass

    def output(self, limit: int = 4000) -> str:
        try:
            self._log.flush()
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:  # pragma: no cover - diagnostics only
            return f"<cannot read {self.log_path}: {exc}>"
        return text[-limit:]

    def describe(self) -> str:
        rc = self.popen.poll()
        state = "running" if rc is None else f"exited with {rc}"
        return (
            f"--- {self.name} (pid {self.pid}, {state}): {' '.join(self.cmd)}\n"
            f"{textwrap.indent(self.output(), '    ')}"
        )

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the leader, then SIGKILL the group and every remembered descendant."""
        self.remember_descendants()
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        self.remember_descendants()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        _kill_all(list(self._seen.values()))
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        self._log.close()


def _kill_all(procs: list[psutil.Process], timeout: float = 5.0) -> None:
    alive = []
    for p in procs:
        try:
            if p.is_running():
                p.kill()
                alive.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    psutil.wait_procs(alive, timeout=timeout)


def _processes_mentioning(needles: Sequence[str]) -> list[psutil.Process]:
    """Processes of this user whose command line contains one of ``needles``."""
    found = []
    me = os.getpid()
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.info["pid"] == me:
            continue
        cmdline = " ".join(p.info["cmdline"] or ())
        if any(n in cmdline for n in needles):
            found.append(p)
    return found


@contextlib.contextmanager
def _env_var(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


# --------------------------------------------------------------------------- Ray
_RAY_WAIT_SCRIPT = """
import sys, time, ray
address, want, deadline = sys.argv[1], int(sys.argv[2]), time.time() + float(sys.argv[3])
ray.init(address=address, logging_level="ERROR", log_to_driver=False)
alive = []
while time.time() < deadline:
    alive = [n for n in ray.nodes() if n.get("Alive")]
    if len(alive) >= want:
        print("ALIVE", len(alive), flush=True)
        sys.exit(0)
    time.sleep(0.5)
print("ALIVE", len(alive), flush=True)
sys.exit(3)
"""


def _ray_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # never join some other cluster
    env["RAY_AUTH_MODE"] = "disabled"  # token auth is on by default in Ray 2.60
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def _ray_node_cmd(ray: str, temp_dir: str, head_port: int, head: bool) -> list[str]:
    # Every port a node opens is chosen here: two nodes share one machine, and
    # Ray's fixed defaults (dashboard agent 52365, client server 10001,
    # dashboard 8265, ...) would collide with each other or with other clusters.
    (agent_http, agent_grpc, runtime_env, metrics, node_mgr, obj_mgr, client_srv) = _free_ports(7)
    cmd = [ray, "start"]
    if head:
        cmd += [
            "--head",
            f"--port={head_port}",
            f"--ray-client-server-port={client_srv}",
            "--include-dashboard=false",
        ]
    else:
        cmd += [f"--address=127.0.0.1:{head_port}"]
    cmd += [
        "--node-ip-address=127.0.0.1",
        "--num-cpus=1",
        "--num-gpus=0",
        "--object-store-memory=200000000",
        f"--temp-dir={temp_dir}",
        f"--node-manager-port={node_mgr}",
        f"--object-manager-port={obj_mgr}",
        f"--dashboard-agent-listen-port={agent_http}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={runtime_env}",
        f"--metrics-export-port={metrics}",
        "--disable-usage-stats",
        "--log-style=record",  # plain lines in the logs shown on failure
        "--log-color=false",
        "--block",
    ]
    return cmd


@contextlib.contextmanager
def ray_two_nodes(tmp_path: os.PathLike | str, timeout_s: float = RAY_START_TIMEOUT_S) -> Iterator[str]:
    """A real two-node Ray cluster on this machine: one head, one worker node.

    Each node is a ``ray start ... --num-cpus=1 --block`` process in its own
    process group with its own ``--temp-dir``. Yields ``"127.0.0.1:PORT"`` (the
    GCS address for ``ray.init(address=...)``); while inside the ``with`` block
    ``RAY_AUTH_MODE=disabled`` is set for clients in this process.

    Logs of the ``ray start`` processes go to ``tmp_path``. Ray's temp dirs are
    short paths under the system temp dir (Unix socket paths are limited to
    107 bytes, pytest's ``tmp_path`` is often too long) and are removed on exit.
    """
    log_dir = Path(tmp_path)
    log_dir.mkdir(parents=True, exist_ok=True)
    ray = venv_bin("ray")
    port = free_port()
    env = _ray_env()
    tmp_root = Path(tempfile.mkdtemp(prefix=f"ray{port}-"))
    head_tmp, worker_tmp = str(tmp_root / "h"), str(tmp_root / "w")
    address = f"127.0.0.1:{port}"
    procs: list[_Proc] = []

    def fail(msg: str) -> None:
        details = "\n".join(p.describe() for p in procs)
        raise RuntimeError(f"ray_two_nodes: {msg}\n{details}")

    try:
        procs.append(_Proc("ray head", _ray_node_cmd(ray, head_tmp, port, True),
                           log_dir / "ray-head.log", env))
        # The worker node can only join once the head's GCS listens.
        deadline = time.monotonic() + timeout_s
        while True:
            if procs[0].popen.poll() is not None:
                fail("head node exited during start-up")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline:
                fail(f"head GCS did not listen on {address} within {timeout_s:.0f} s")
            time.sleep(0.2)
        procs.append(_Proc("ray worker", _ray_node_cmd(ray, worker_tmp, port, False),
                           log_dir / "ray-worker.log", env))

        remaining = max(5.0, deadline - time.monotonic())
        try:
            check = subprocess.run(
                [sys.executable, "-c", _RAY_WAIT_SCRIPT, address, "2", str(remaining)],
                env=env, capture_output=True, text=True, timeout=remaining + 30,
            )
        except subprocess.TimeoutExpired:
            fail(f"no answer from the cluster at {address} within {remaining + 30:.0f} s")
        if check.returncode != 0:
            fail(f"2 alive nodes not reached within {timeout_s:.0f} s "
                 f"(rc {check.returncode}): {check.stdout.strip()} {check.stderr[-2000:]}")
        for p in procs:
            if p.popen.poll() is not None:
                fail("a ray start --block process exited")
            p.remember_descendants()

        with _env_var("RAY_AUTH_MODE", "disabled"):
            yield address
    finally:
        for p in reversed(procs):  # worker node first, then head
            p.stop()
        # Safety net: anything still mentioning this cluster's temp dir or GCS port
        # (raylet, gcs_server, workers re-parented after their raylet died, ...).
        _kill_all(_processes_mentioning([str(tmp_root), f"127.0.0.1:{port}", f"--gcs-address={address}"]))
        shutil.rmtree(tmp_root, ignore_errors=True)


# --------------------------------------------------------------------------- Dask
@contextlib.contextmanager
def dask_external(n_workers: int = 2, timeout_s: float = DASK_START_TIMEOUT_S,
                  memory_limit: str = "3GB") -> Iterator[str]:
    """A Dask cluster of separate processes: ``dask scheduler`` + ``n_workers`` ``dask worker``.

    Workers run with ``--nanny --nthreads 1 --memory-limit 3GB``; dashboards are
    off (fixed port 8787 would collide). Yields ``"tcp://127.0.0.1:PORT"``.
    """
    import distributed  # local import: only tests that use Dask pay for it

    dask = venv_bin("dask")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    work = Path(tempfile.mkdtemp(prefix=f"dask{port}-"))
    env = dict(os.environ)
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    procs: list[_Proc] = []

    def fail(msg: str) -> None:
        details = "\n".join(p.describe() for p in procs)
        raise RuntimeError(f"dask_external: {msg}\n{details}")

    try:
        procs.append(_Proc(
            "dask scheduler",
            [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            work / "scheduler.log", env,
        ))
        for i in range(n_workers):
            procs.append(_Proc(
                f"dask worker {i}",
                [dask, "worker", address, "--nthreads", "1", "--memory-limit", memory_limit,
                 "--nanny", "--no-dashboard", "--host", "127.0.0.1",
                 "--name", f"w{i}", "--local-directory", str(work / f"w{i}")],
                work / f"worker{i}.log", env,
            ))
        deadline = time.monotonic() + timeout_s
        client = None
        try:
            while client is None:
                if procs[0].popen.poll() is not None:
                    fail("scheduler exited during start-up")
                try:
                    client = distributed.Client(address, timeout=5)
                except (OSError, TimeoutError):
                    if time.monotonic() > deadline:
                        fail(f"scheduler at {address} not reachable within {timeout_s:.0f} s")
                    time.sleep(0.5)
            try:
                client.wait_for_workers(n_workers, timeout=max(1.0, deadline - time.monotonic()))
            except TimeoutError:
                fail(f"{n_workers} workers did not join within {timeout_s:.0f} s "
                     f"(have {len(client.scheduler_info(n_workers=-1)['workers'])})")
        finally:
            if client is not None:
                client.close()
        for p in procs:
            p.remember_descendants()
        yield address
    finally:
        for p in reversed(procs):  # workers (nannies) first, scheduler last
            p.stop()
        _kill_all(_processes_mentioning([str(work)]))
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- SLURM
def slurm_available(timeout_s: float = 10.0) -> bool:
    """True when ``sinfo`` is installed and the controller answers."""
    sinfo = shutil.which("sinfo")
    if sinfo is None:
        return False
    try:
        res = subprocess.run([sinfo, "-h", "-o", "%P"], capture_output=True, text=True,
                             timeout=timeout_s)
    except (subprocess.TimeoutExpired, OSError):
        return False
    return res.returncode == 0


def slurm_nodes(timeout_s: float = 10.0) -> list[str]:
    """Names of the SLURM nodes that can run jobs now (not down, drained or failing)."""
    try:
        res = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True,
                             timeout=timeout_s)
    except (subprocess.TimeoutExpired, OSError):
        return []
    ok = ("idle", "mixed", "allocated", "completing")
    return sorted({ln.split()[0] for ln in res.stdout.splitlines()
                   if len(ln.split()) == 2 and ln.split()[1].rstrip("*~#!%$@^-") in ok})


def require_slurm(min_nodes: int = 1) -> list[str]:
    """The usable SLURM nodes (at least ``min_nodes``; with 2, each must have the network namespace
    .ci/slurm-up.sh gives it).  Without them the calling test fails under CI=true (where .ci/run starts
    SLURM, so its absence is a broken CI) and is skipped elsewhere, with the command that starts one."""
    import pytest

    if not slurm_available():
        msg = "no running SLURM (sinfo missing or slurmctld not answering)"
    else:
        found = slurm_nodes()
        if len(found) >= min_nodes and (min_nodes < 2 or all(os.path.exists(f"/run/netns/{n}") for n in found[:2])):
            return found
        msg = f"{min_nodes} usable SLURM node(s) with network namespaces are needed (found {found})"
    msg += ": run `sudo bash .ci/slurm-up.sh`"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: {msg}")
    pytest.skip(msg)


# The two-node SLURM of .ci/slurm-up.sh runs each node's slurmd (and so every job process of that
# node) in the network namespace /run/netns/<node name>; a process belongs to a node when its
# network namespace is that node's.
def _netns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def node_processes(nodes: Sequence[str], match=None) -> dict[str, list[str]]:
    """{node: ["pid: cmdline", ...]} of the processes running in each node's network namespace for
    which ``match(cmdline, name)`` is true (all when None). Needs /run/netns/<node> (root)."""
    inodes = {n: _netns_inode(f"/run/netns/{n}") for n in nodes}
    missing = [n for n, i in inodes.items() if i is None]
    if missing:
        raise RuntimeError(f"no network namespace /run/netns/<node> for {missing}: not the two-node SLURM "
                           "of .ci/slurm-up.sh (or not root)")
    by_inode = {i: n for n, i in inodes.items()}
    out: dict[str, list[str]] = {n: [] for n in nodes}
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        ino = _netns_inode(f"/proc/{p.info['pid']}/ns/net")
        node = by_inode.get(ino)
        if node is None or p.info["pid"] == os.getpid():
            continue
        cmd = " ".join(p.info["cmdline"] or ()) or (p.info["name"] or "")
        if match is None or match(cmd, p.info["name"] or ""):
            out[node].append(f"{p.info['pid']}: {cmd[:200]}")
    return out


def kill_node_processes(node: str, keep: Sequence[str] = ("slurmd", "slurmstepd")) -> list[str]:
    """SIGKILL every process of ``node`` (its network namespace) except the SLURM daemons: what a
    node crash looks like to the processes on the other nodes. Returns what was killed."""
    procs = node_processes([node], match=lambda cmd, name: name not in keep)[node]
    for entry in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(entry.split(":", 1)[0]), signal.SIGKILL)
    return procs


def node_listening(node: str) -> list[str]:
    """TCP listening sockets in ``node``'s network namespace: "address:port process" lines."""
    res = subprocess.run(["ip", "netns", "exec", node, "ss", "-ltnpH"], capture_output=True, text=True,
                         timeout=30)
    out = []
    for ln in res.stdout.splitlines():
        parts = ln.split()
        if len(parts) >= 6:
            name = parts[5].split('"')[1] if '"' in parts[5] else parts[5]
            out.append(f"{parts[3]} {name}")
    return sorted(set(out))


# ------------------------------------------------------------------------------------------------
# helpers shared by the SLURM and multi-node tests
# ------------------------------------------------------------------------------------------------

def record(tmp_path: Path, name: str, data: dict) -> None:
    """Keep what a cluster test saw (job ids, nodes, node ids): beside the test and, when
    TFCONV_TEST_RECORD_DIR is set (.ci/run sets it and prints the files), as <name>.json there."""
    import json

    text = json.dumps(data, indent=1, sort_keys=True)
    (tmp_path / "slurm_record.json").write_text(text)
    if os.environ.get("TFCONV_TEST_RECORD_DIR"):
        d = Path(os.environ["TFCONV_TEST_RECORD_DIR"])
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{name}.json").write_text(text)
    print(f"{name}: {text}")


def job_info(job_id: str) -> dict:
    """`scontrol show job -o` as a dict (finished jobs stay visible for MinJobAge = 300 s)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True,
                         timeout=30, check=False).stdout
    return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)


def assert_runs_bitwise_equal(a_store, b_store, points, where: str = "") -> None:
    """Every curve and checkpoint of every run equal byte for byte in two train stores."""
    from tfconv import store

    for p in points:
        rid = p.run_id
        a, b = store.read_run(a_store, rid), store.read_run(b_store, rid)
        assert sorted(a["curves"]) == sorted(b["curves"])
        for name in a["curves"]:
            assert a["curves"][name].dtype == b["curves"][name].dtype, f"{where}{rid}: curve {name} dtype differs"
            assert a["curves"][name].tobytes() == b["curves"][name].tobytes(), f"{where}{rid}: curve {name} differs"
        assert sorted(a["checkpoints"]) == sorted(b["checkpoints"])
        for e, arrays in a["checkpoints"].items():
            for name, arr in arrays.items():
                assert arr.tobytes() == b["checkpoints"][e][name].tobytes(), f"{where}{rid}: epoch {e} {name} differs"
