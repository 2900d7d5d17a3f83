"""A Ray cluster across the nodes of the SLURM allocation this process runs in.

Follows the recipe of Ray's "Deploying on Slurm" guide: inside an sbatch (or salloc) allocation,
one ``srun --nodes=1 --ntasks=1 -w <head> ray start --head --block`` on the first node of
``SLURM_JOB_NODELIST`` and one ``srun --nodes=1 --ntasks=1 -w <node> ray start --address=<head>
--block`` on every other node.  Differences from the guide's shell script:

* every ``srun`` is started with ``--overlap``: the driver itself usually runs inside a job step
  (Snakemake's SLURM executor runs each job as ``srun -n1 ...``) that already holds the CPUs and
  memory of the first node; without ``--overlap`` the Ray steps would wait for it forever
  ("Requested nodes are busy");
* each node picks free ports for all of its Ray processes (several jobs may share a node) and
  gets its own ``--temp-dir`` (``<temp_dir>/n<i>``, short: Unix socket paths are limited);
* no fixed ``sleep``: the head prints its address, the driver waits until the GCS port answers and
  then until every node has joined (bounded by ``timeout_s``);
* on exit -- normal, exception, or SIGTERM (as sent by ``scancel``/Snakemake) -- the ``srun``
  processes get SIGTERM (srun forwards it to ``ray start --block``, which stops its daemons),
  steps still alive after ``grace_s`` are cancelled with ``scancel <job>.<step>`` and the
  ``srun`` processes are killed.

    with ray_in_slurm_allocation() as address:      # "10.1.2.3:41234"
        run_grid(..., address=address)

`ray_cluster_address(ray_cfg)` is what the pipeline uses: the allocation's cluster when the
config says ``ray: {slurm_allocation: true}`` and the process runs inside SLURM, else the
configured address (or None: RAY_ADDRESS / a local cluster, decided by ``ray_grid.connect``).

What SLURM says about the job (its nodes, their addresses, its steps) comes from
`tfconv.cluster.slurm`; this module starts and stops the Ray processes.
"""
from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional

from .slurm import (allocation_nodes, env_int, in_slurm_allocation, slurm_node_addresses, slurmctld_address,
                    step_ids)

__all__ = ["default_temp_dir", "ray_in_slurm_allocation", "ray_cluster_address"]

#: First line the node launcher prints on the head node: "<prefix> <ip>:<port>".
ADDRESS_PREFIX = "TFCONV_RAY_HEAD_ADDRESS"

# Runs on each node (inside its srun step): choose free ports on that node, print the head's
# address (head only), then exec `ray start ... --block` so that srun's task *is* the blocking
# `ray start` (SIGTERM forwarded by srun reaches it and it stops its daemons).  Plain Python, no
# tfconv import (that would load torch on every node for nothing).
_NODE_LAUNCHER = r"""
import os, socket, sys
role, ray_bin, temp_dir, num_cpus, num_gpus, osm, arg, slurm_addr = sys.argv[1:9]
def free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.bind(("", 0)); socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports
def bindable(ip):
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.bind((ip, 0)); s.close(); return True
    except OSError:
        return False
def node_ip():
    # 1. the node's SLURM address (NodeAddr, what slurmctld and the other nodes use to reach it),
    #    when it is an address of this machine; 2. the interface that routes to the head / the
    #    controller; 3. the host name's address.  Never loopback: the other nodes could not reach it.
    cands = []
    try:
        cands.append(("NodeAddr " + slurm_addr, socket.gethostbyname(slurm_addr)))
    except OSError:
        pass
    target = arg.rsplit(":", 1)[0] if role == "worker" else os.environ.get("TFCONV_SLURMCTLD_ADDR", "")
    if target:
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((target, 9))
            cands.append(("route to " + target, s.getsockname()[0])); s.close()
        except OSError:
            pass
    try:
        cands.append(("host name", socket.gethostbyname(socket.gethostname())))
    except OSError:
        pass
    for how, ip in cands:
        if not ip.startswith("127.") and bindable(ip):
            print(f"node launcher: node address {ip} ({how})", flush=True)
            return ip
    sys.exit(f"node launcher: no usable node address among {cands} (NodeAddr not local, only loopback)")
gcs, client, agent_http, agent_grpc, rt_env, metrics, node_mgr, obj_mgr = free_ports(8)
ip = node_ip()
cmd = [ray_bin, "start", f"--node-ip-address={ip}", f"--temp-dir={temp_dir}", f"--num-cpus={num_cpus}",
       f"--node-manager-port={node_mgr}", f"--object-manager-port={obj_mgr}",
       f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
       f"--runtime-env-agent-port={rt_env}", f"--metrics-export-port={metrics}",
       "--disable-usage-stats", "--log-style=record", "--log-color=false", "--block"]
if num_gpus != "auto":
    cmd.append(f"--num-gpus={num_gpus}")
if osm != "auto":
    cmd.append(f"--object-store-memory={osm}")
if role == "head":
    cmd += ["--head", f"--port={gcs}", f"--ray-client-server-port={client}", "--include-dashboard=false"]
    print(f"TFCONV_RAY_HEAD_ADDRESS {ip}:{gcs}", flush=True)
else:
    cmd.append(f"--address={arg}")
print("node launcher:", " ".join(cmd), flush=True)
os.makedirs(temp_dir, exist_ok=True)
os.execv(ray_bin, cmd)
"""

_WAIT_FOR_NODES = r"""
import sys, time, ray
address, want, deadline = sys.argv[1], int(sys.argv[2]), time.time() + float(sys.argv[3])
ray.init(address=address, logging_level="ERROR", log_to_driver=False)
alive = []
while time.time() < deadline:
    alive = [n for n in ray.nodes() if n.get("Alive")]
    if len(alive) >= want:
        break
    time.sleep(0.5)
print("ALIVE", len(alive), " ".join(sorted(n["NodeManagerHostname"] for n in alive)), flush=True)
sys.exit(0 if len(alive) >= want else 3)
"""


def default_temp_dir() -> str:
    """Root of the Ray temp dirs of this job's cluster: ``$TMPDIR/ray-<SLURM_JOB_ID>`` (node i: ``/n<i>``)."""
    return os.path.join(tempfile.gettempdir(), f"ray-{os.environ.get('SLURM_JOB_ID', 'nojob')}")


def _ray_bin() -> str:
    cand = os.path.join(os.path.dirname(sys.executable), "ray")  # the venv's, not PATH's
    return cand if os.path.exists(cand) else "ray"


def _auth_env() -> Dict[str, str]:
    """Environment that makes the nodes and the driver agree on Ray's token authentication.

    An explicit RAY_AUTH_MODE is kept as it is (tests use ``disabled``).  Unset, Ray 2.60 turns
    token auth on, but ``ray start`` refuses to start without a token and a client given an
    explicit address only sends one when the mode is ``token``: set the mode, and when no token
    exists (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token) give this cluster a fresh one
    through the environment (srun passes it to every node; nothing is written to disk).
    """
    if "RAY_AUTH_MODE" in os.environ:
        return {}
    out = {"RAY_AUTH_MODE": "token"}
    has_token = (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                 or os.path.exists(os.path.expanduser("~/.ray/auth_token")))
    if not has_token:
        import secrets

        out["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    return out


class _Node:
    """One ``srun ... ray start --block`` process; its output is forwarded to the log."""

    def __init__(self, name: str, cmd: List[str], env: Mapping[str, str], log: Callable[[str], None]):
        self.name = name
        self.cmd = cmd
        self.lines: List[str] = []
        self.address: Optional[str] = None
        self._address_seen = threading.Event()
        self._log = log
        self.popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, env=dict(env),
                                      start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            line = line.rstrip()
            self.lines.append(line)
            if line.startswith(ADDRESS_PREFIX) and self.address is None:
                self.address = line.split()[1]
                self._address_seen.set()
            elif line:
                self._log(f"[ray-slurm {self.name}] {line}")
        self._address_seen.set()  # the process ended: stop waiting

    def wait_address(self, timeout: float) -> Optional[str]:
        self._address_seen.wait(timeout)
        return self.address

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self, n: int = 30) -> str:
        return "\n".join(self.lines[-n:])


@contextlib.contextmanager
def _sigterm_raises(seen: Optional[Dict[str, bool]] = None) -> Iterator[None]:
    """Turn SIGTERM into SystemExit while inside (main thread only) so that `finally` runs;
    ``seen["sigterm"]`` becomes True when one arrived."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        if seen is not None:
            seen["sigterm"] = True
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def ray_in_slurm_allocation(
    num_cpus: Optional[int] = None,
    num_gpus: Optional[int] = None,
    temp_dir: Optional[str] = None,
    object_store_memory: Optional[int] = None,
    timeout_s: float = 180.0,
    grace_s: float = 15.0,
    keep_temp_dir: bool = False,
    log: Callable[[str], None] = print,
) -> Iterator[str]:
    """Start a Ray head on the allocation's first node and a Ray worker on each other node;
    yield the head's address ("ip:port"); tear everything down on exit (also on errors).

    num_cpus: CPUs each node offers to Ray; default SLURM_CPUS_PER_TASK (one task per node:
    request ``--nodes=N --ntasks-per-node=1 --cpus-per-task=C``), else SLURM_CPUS_ON_NODE.
    num_gpus: GPUs per node; default SLURM_GPUS_ON_NODE when SLURM allocated GPUs (the node steps
    then request them with ``--gres=gpu:<n>``), else 0 (Ray never uses GPUs SLURM did not give).
    temp_dir: root of Ray's per-node temp dirs (``<temp_dir>/n<i>`` on node i; default
    ``$TMPDIR/ray-<jobid>``); keep it short.
    object_store_memory: bytes per node; default a quarter of SLURM_MEM_PER_NODE when set.
    keep_temp_dir: keep the nodes' Ray temp dirs (logs, spilled objects); by default they are
    removed after a successful block and kept (for their logs) when it raised.
    """
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        raise RuntimeError("ray_in_slurm_allocation: not inside a SLURM allocation (SLURM_JOB_ID is not set); "
                           "run it in an sbatch/salloc job")
    nodes = allocation_nodes()
    cpus = int(num_cpus or env_int("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE") or os.cpu_count() or 1)
    gpus = num_gpus if num_gpus is not None else (env_int("SLURM_GPUS_ON_NODE") or 0)
    mem_mb = env_int("SLURM_MEM_PER_NODE")
    osm = object_store_memory or (max(100, mem_mb // 4) * 1024 * 1024 if mem_mb else None)
    root = temp_dir or default_temp_dir()
    step_name = f"tfconv-ray-{job}"
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    auth = _auth_env()
    env.update(auth)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    addrs = slurm_node_addresses(nodes)
    ctld = slurmctld_address()
    if ctld:
        env["TFCONV_SLURMCTLD_ADDR"] = ctld
    ray_bin = _ray_bin()

    def node_cmd(i: int, node: str, role: str, arg: str) -> List[str]:
        srun = ["srun", "--overlap", "--nodes=1", "--ntasks=1", f"--cpus-per-task={cpus}", "-w", node,
                f"--job-name={step_name}", "--kill-on-bad-exit=1", "--unbuffered"]
        if gpus:
            srun.append(f"--gres=gpu:{gpus}")
        return srun + [sys.executable, "-c", _NODE_LAUNCHER, role, ray_bin, os.path.join(root, f"n{i}"),
                       str(cpus), str(gpus), str(osm) if osm else "auto", arg, addrs.get(node, node)]

    procs: List[_Node] = []
    t0 = time.time()
    deadline = t0 + timeout_s

    def fail(msg: str) -> None:
        details = "\n".join(f"--- {p.name} ({'running' if p.alive() else f'exited {p.popen.returncode}'}): "
                            f"{' '.join(shlex.quote(c) for c in p.cmd[:12])} ...\n{p.output()}" for p in procs)
        raise RuntimeError(f"ray_in_slurm_allocation (job {job}, nodes {','.join(nodes)}): {msg}\n{details}")

    log(f"[ray-slurm] job {job}: starting a Ray cluster on {len(nodes)} node(s) {','.join(nodes)} "
        f"({cpus} CPUs, {gpus} GPUs per node), head on {nodes[0]}; node addresses "
        f"{', '.join(f'{n}={addrs.get(n, n)}' for n in nodes)}")
    old_auth = {k: os.environ.get(k) for k in auth}
    seen: Dict[str, bool] = {}
    try:
        with _sigterm_raises(seen):
            os.environ.update(auth)  # the driver (this process) connects with the same settings
            head = _Node(f"head@{nodes[0]}", node_cmd(0, nodes[0], "head", ""), env, log)
            procs.append(head)
            address = head.wait_address(max(1.0, deadline - time.time()))
            if not address:
                fail("the head node did not report its address" + (" (srun exited)" if not head.alive() else ""))
            host, port = address.rsplit(":", 1)
            while True:  # the GCS listens
                if not head.alive():
                    fail("the head's `ray start` exited during start-up")
                with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=2):
                    break
                if time.time() > deadline:
                    fail(f"the head's GCS at {address} did not answer within {timeout_s:.0f} s")
                time.sleep(0.3)
            for i, node in enumerate(nodes[1:], start=1):
                procs.append(_Node(f"worker{i}@{node}", node_cmd(i, node, "worker", address), env, log))
            left = max(5.0, deadline - time.time())
            try:
                check = subprocess.run([sys.executable, "-c", _WAIT_FOR_NODES, address, str(len(nodes)), str(left)],
                                       capture_output=True, text=True, env=env, timeout=left + 60)
            except subprocess.TimeoutExpired:
                fail(f"no answer from the Ray cluster at {address}")
            if check.returncode != 0:
                fail(f"{len(nodes)} nodes did not join within {timeout_s:.0f} s: {check.stdout.strip()} "
                     f"{check.stderr[-2000:]}")
            dead = [p.name for p in procs if not p.alive()]
            if dead:
                fail(f"`ray start` exited on {', '.join(dead)}")
            log(f"[ray-slurm] Ray cluster at {address} up in {time.time() - t0:.1f}s: {check.stdout.strip()}")
            yield address
    except BaseException:
        keep_temp_dir = True
        raise
    finally:
        if seen.get("sigterm"):
            # scancel / time limit: SLURM SIGKILLs the job after KillWait (often 30 s, 10 s in the
            # test cluster), and `ray start` drains for up to 30 s on SIGTERM: stop it sooner
            grace_s = min(grace_s, 3.0)
        _teardown(procs, job, step_name, grace_s, log)
        if procs and not keep_temp_dir:
            _remove_temp_dirs(nodes, root, env)
        elif procs:
            log(f"[ray-slurm] Ray logs kept in {root}/n<i> on the nodes {','.join(nodes)}")
        for k, v in old_auth.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _remove_temp_dirs(nodes: List[str], root: str, env: Mapping[str, str]) -> None:
    """rm -rf the Ray temp root on every node (one srun over all nodes); best effort."""
    cmd = ["srun", "--overlap", f"--nodes={len(nodes)}", f"--ntasks={len(nodes)}", "--ntasks-per-node=1",
           "--cpus-per-task=1", "-w", ",".join(nodes), "rm", "-rf", root]
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(cmd, capture_output=True, env=dict(env), timeout=60)


def _teardown(procs: List[_Node], job: str, step_name: str, grace_s: float, log: Callable[[str], None]) -> None:
    """Workers first, then the head: SIGTERM to srun, then scancel of surviving steps, then SIGKILL."""
    if not procs:
        return
    t0 = time.time()
    log(f"[ray-slurm] stopping the Ray cluster of job {job}")
    for p in reversed(procs):
        if p.alive():
            with contextlib.suppress(ProcessLookupError):
                p.popen.send_signal(signal.SIGTERM)
    end = time.time() + grace_s
    for p in reversed(procs):
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.popen.wait(timeout=max(0.1, end - time.time()))
    steps = step_ids(job, step_name)
    if steps:
        log(f"[ray-slurm] cancelling steps still running: {' '.join(steps)}")
        subprocess.run(["scancel", "--quiet", *steps], capture_output=True, timeout=30)
    for p in procs:
        if p.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.popen.wait(timeout=10)
    log(f"[ray-slurm] Ray cluster of job {job} stopped in {time.time() - t0:.1f}s "
        f"(srun exit codes {[p.popen.returncode for p in procs]})")


@contextlib.contextmanager
def ray_cluster_address(ray_cfg: Mapping[str, Any], needed: bool = True,
                        log: Callable[[str], None] = print, **kwargs: Any) -> Iterator[Optional[str]]:
    """The Ray address train_grid should use, for the duration of the block.

    ``ray.slurm_allocation: true`` inside a SLURM job: a cluster over the job's nodes
    (`ray_in_slurm_allocation`), torn down on exit.  Otherwise ``ray.address`` (None lets
    ``ray_grid.connect`` use RAY_ADDRESS or start a local cluster).  ``needed=False`` (nothing to
    train) starts nothing.
    """
    if ray_cfg.get("slurm_allocation") and needed:
        if in_slurm_allocation():
            with ray_in_slurm_allocation(log=log, **kwargs) as address:
                yield address
            return
        log("[ray-slurm] ray.slurm_allocation is set but this job does not run inside SLURM "
            "(SLURM_JOB_ID unset): using ray.address / RAY_ADDRESS / a local cluster instead")
    elif needed and in_slurm_allocation() and (env_int("SLURM_JOB_NUM_NODES", "SLURM_NNODES") or 1) > 1:
        log("[ray-slurm] WARNING: this SLURM job has several nodes but ray.slurm_allocation is false: "
            "only the first node is used")
    yield ray_cfg.get("address")
