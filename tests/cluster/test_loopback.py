"""Servers the workflow starts on this machine listen on loopback only (issue 17): the local Ray
cluster of `tfconv.cluster.ray_grid.connect` (GCS, raylet, workers, dashboard and runtime-env
agents) and the Dask LocalCluster of `tfconv.cluster.dask_gram.dask_client`; and under Ray's
default authentication mode (token) a client without the cluster's token is refused."""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
from timeouts import hard_timeout

ROOT = Path(__file__).resolve().parents[2]


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8, ::1, or IPv4-mapped loopback (::ffff:127.0.0.1) of a dual-stack socket."""
    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


def listening_sockets(pids):
    """(pid, process name, address, port) of every listening TCP socket and bound UDP socket of `pids`."""
    out = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            name = " ".join(proc.cmdline()[:2])[-80:] or proc.name()
            conns = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for c in conns:
            udp = c.type == 2  # socket.SOCK_DGRAM
            if (c.status == psutil.CONN_LISTEN or (udp and c.laddr)) and c.laddr:
                out.append((pid, name, c.laddr.ip, c.laddr.port))
    return out


def descendants(pid=None):
    me = psutil.Process(pid or os.getpid())
    return [me.pid] + [p.pid for p in me.children(recursive=True)]


# The driver: starts the local cluster through connect() in Ray's default auth mode, runs a task
# (so that worker processes exist), lists the sockets of every process of the cluster, then tries
# three clients on the cluster's GCS address: no token (auth disabled on the client), a wrong token,
# and, as the control, this machine's token (the one the cluster was started with).
DRIVER = textwrap.dedent("""
    import json, os, subprocess, sys, time
    sys.path.insert(0, sys.argv[1])
    sys.path.insert(0, os.path.join(sys.argv[1], "tests"))
    sys.path.insert(0, os.path.join(sys.argv[1], "tests", "cluster"))
    import ray
    from tfconv.cluster.ray_grid import connect
    from test_loopback import descendants, listening_sockets

    info = connect(None, num_cpus=1, log=lambda m: None)
    assert ray.get(ray.remote(lambda: 40 + 2).remote()) == 42
    time.sleep(2)  # the agents open their ports after start-up
    sockets = listening_sockets(descendants())
    gcs = ray.get_runtime_context().gcs_address
    client = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False); "
              "print('RESULT', ray.get(ray.remote(lambda: 6 * 7).remote()))")
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: a client, too, would replace 127.0.0.1 by this host's
    # routable address (where nothing listens now) unless Ray clusters are off, as in connect()
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    base["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    envs = {
        "no-token": dict(base, RAY_AUTH_MODE="disabled", HOME=sys.argv[2]),
        "wrong-token": dict(base, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 32, HOME=sys.argv[2]),
        "cluster-token": dict(base, RAY_AUTH_MODE="token"),  # the token connect() left in ~/.ray/auth_token
    }
    procs = {k: subprocess.Popen(["timeout", "-k", "5", "60", sys.executable, "-c", client, gcs], env=e,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for k, e in envs.items()}
    clients = {}
    for k, p in procs.items():
        out, _ = p.communicate()
        clients[k] = {"rc": p.returncode, "ran": "RESULT 42" in out, "tail": out[-1500:]}
    pids = descendants()
    ray.shutdown()
    print("JSON" + json.dumps({"info": info, "gcs": gcs, "sockets": sockets, "clients": clients, "pids": pids}))
""")


@hard_timeout(300)
def test_local_ray_cluster_listens_on_loopback_and_refuses_tokenless_clients(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}  # Ray's default: token auth
    env.update(PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0")
    empty_home = tmp_path / "home"
    empty_home.mkdir()
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(ROOT), str(empty_home)], env=env, capture_output=True,
                          text=True, timeout=280)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("JSON")), None)
    assert proc.returncode == 0 and line, f"driver failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    res = json.loads(line[4:])
    sockets = res["sockets"]
    print("\n".join(map(str, sockets)))
    names = " | ".join(sorted({s[1] for s in sockets}))
    # the cluster's own servers are there: GCS, raylet, workers, agents
    assert len(sockets) >= 5 and "gcs_server" in names and "raylet" in names, names
    assert res["gcs"].startswith("127.0.0.1:"), res["gcs"]
    exposed = [s for s in sockets if not is_loopback(s[2])]
    assert not exposed, "Ray servers listening beyond loopback:\n" + "\n".join(map(str, exposed))
    cl = res["clients"]
    assert cl["cluster-token"]["ran"], f"control client with the cluster's token failed:\n{cl['cluster-token']['tail']}"
    for k in ("no-token", "wrong-token"):
        assert not cl[k]["ran"], f"{k} client ran code on the cluster: {cl[k]}"
        tail = cl[k]["tail"].lower()
        assert "unauthenticated" in tail or "authentication" in tail or "token" in tail, f"{k}: {cl[k]['tail']}"
    # after ray.shutdown() no process of the cluster is left
    alive = [p for p in res["pids"][1:] if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"Ray processes outlived the driver's shutdown: {alive}"


@hard_timeout(180)
def test_local_dask_cluster_listens_on_loopback_only():
    from tfconv.cluster.dask_gram import dask_client

    cfg = {"n_workers": 2, "threads_per_worker": 1, "memory_limit": "1GB", "retries": 0}
    with dask_client(cfg, log=lambda m: None) as client:
        assert client.submit(lambda: 6 * 7).result() == 42
        sockets = listening_sockets(descendants())
        addrs = [client.scheduler.address] + list(client.scheduler_info()["workers"])
    print("\n".join(map(str, sockets)))
    assert len(sockets) >= 3, sockets  # scheduler (in this process) and two workers (nannies too)
    assert all(a.startswith(("tcp://127.0.0.1:", "inproc://")) for a in addrs), addrs
    exposed = [s for s in sockets if not is_loopback(s[2])]
    assert not exposed, "Dask servers listening beyond loopback:\n" + "\n".join(map(str, exposed))


# A process of the local cluster that outlives ray.shutdown() (the issue saw dashboard and
# runtime-env agents left after the head was killed during start-up; killing the GCS, the raylet or
# the driver during start-up left nothing here, with or without this change): Ray passes the session
# folder session_<date>_<driver pid> to every process of the cluster, and the step's cleanup ends
# whatever still carries it.  A real process stands in for the orphaned agent.
def test_step_cleanup_ends_processes_left_by_the_local_cluster(tmp_path):
    from tfconv.cluster.ray_grid import local_cluster_processes, stop_local_cluster

    session = tmp_path / "ray" / f"session_2026-12-02_11-00-00_123456_{os.getpid()}"
    other = tmp_path / "ray" / f"session_2026-12-02_11-00-00_123456_1{os.getpid()}"  # another driver's
    sleeper = "import sys, time; time.sleep(120)"
    orphan = subprocess.Popen([sys.executable, "-c", sleeper, f"--logs-dir={session}/logs"])
    foreign = subprocess.Popen([sys.executable, "-c", sleeper, f"--logs-dir={other}/logs"])
    try:
        import time

        time.sleep(0.5)
        assert [p.pid for p in local_cluster_processes()] == [orphan.pid]
        messages = []
        assert stop_local_cluster(log=messages.append, timeout=10) == 1
        assert orphan.wait(timeout=10) is not None and foreign.poll() is None
        assert "ending 1 process(es) of the local Ray cluster that outlived its shutdown" in messages[0]
        assert local_cluster_processes() == []
    finally:
        for p in (orphan, foreign):
            p.kill()
            p.wait()
