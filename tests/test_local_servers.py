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

ROOT = Path(__file__).resolve().parent.parent


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
    import ray
    from tfconv.cluster.ray_grid import connect
    from test_local_servers import descendants, listening_sockets

    info = connect(None, num_cpus=1, log=lambda m: None)
    assert ray.get(ray.remote(lambda: 40 + 2).remote()) == 42
    time.sleep(2)  # the agents open their ports after start-up
    sockets = listening_sockets(descendants())
    gcs = ray.get_runtime_context().gcs_address
    client = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False); "
              "print('RESULT', ray.get(ray.remote(lambda: 6 * 7).remote()))")
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    envs = {
        "no-token": dict(base, RAY_AUTH_MODE="disabled", HOME=sys.argv[2]),
        "wrong-token": dict(base, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 32, HOME=sys.argv[2]),
        "cluster-token": dict(base),
    }
    procs = {k: subprocess.Popen(["timeout", "-k", "5", "90", sys.executable, "-c", client, gcs], env=e,
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
        assert not cl[k]["ran"] and cl[k]["rc"] not in (0, 124, 137), f"{k} client: {cl[k]}"
        assert "auth" in cl[k]["tail"].lower() or "token" in cl[k]["tail"].lower(), cl[k]["tail"]
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


# A local cluster whose GCS and raylet are killed (SIGKILL) under a running driver: ray.shutdown()
# alone, as the step did, leaves the processes the dead raylet had started; the step's cleanup
# (`stop_local_cluster`, run_grid's `finally`) ends every process of the cluster.
KILLED_HEAD = textwrap.dedent("""
    import json, os, signal, sys, time
    sys.path.insert(0, sys.argv[1])
    import psutil, ray
    from tfconv.cluster.ray_grid import connect, local_cluster_processes, stop_local_cluster

    connect(None, num_cpus=1, log=lambda m: None)
    assert ray.get(ray.remote(lambda: 1).remote()) == 1
    time.sleep(2)
    procs = local_cluster_processes()
    names = sorted({p.name() for p in procs})
    for p in procs:
        if p.name() in ("gcs_server", "raylet"):
            p.send_signal(signal.SIGKILL)
    time.sleep(3)
    ray.shutdown()
    time.sleep(2)
    after_shutdown = sorted(p.name() for p in local_cluster_processes())
    ended = stop_local_cluster(log=print)
    after_cleanup = [p.pid for p in local_cluster_processes()]
    print("JSON" + json.dumps({"names": names, "after_shutdown": after_shutdown, "ended": ended,
                               "after_cleanup": after_cleanup, "pids": [p.pid for p in procs]}))
""")


@hard_timeout(240)
def test_no_ray_process_outlives_the_step_when_the_head_dies(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0")
    # auth off: a dead head cannot be asked for anything; the default mode is tested above
    env["RAY_AUTH_MODE"] = "disabled"
    proc = subprocess.run([sys.executable, "-c", KILLED_HEAD, str(ROOT)], env=env, capture_output=True, text=True,
                          timeout=220)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("JSON")), None)
    assert line, f"driver failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    res = json.loads(line[4:])
    print(res)
    assert "gcs_server" in res["names"] and "raylet" in res["names"], res["names"]
    assert res["after_cleanup"] == [], res
    alive = [p for p in res["pids"] if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes of the killed cluster still alive: {alive}"
