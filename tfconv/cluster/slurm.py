"""What SLURM says about the job this process runs in: its nodes, their addresses, its CPUs, its steps.

Queries of ``squeue`` / ``scontrol`` and the job's environment only; nothing here starts a cluster
(the Ray launcher is `tfconv.cluster.ray_slurm`, the Dask one `tfconv.cluster.dask_gram`) or imports
Ray or Dask, so that the workflow's `common.smk` can size its cluster rules (`slurm_job_cpus`)
cheaply when the Snakefile is parsed.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from typing import Dict, List, Optional

__all__ = ["in_slurm_allocation", "allocation_nodes", "slurm_node_addresses", "slurmctld_address",
           "node_address", "slurm_job_cpus", "env_int", "step_ids"]


def in_slurm_allocation() -> bool:
    """True when this process runs inside a SLURM job (sbatch, salloc, or a step of either)."""
    return bool(os.environ.get("SLURM_JOB_ID"))


def allocation_nodes() -> List[str]:
    """Host names of the allocation's nodes, the first one first (``scontrol show hostnames``).

    The job's node list comes from SLURM (``squeue -j $SLURM_JOB_ID -o %N``): inside a job step
    (Snakemake's SLURM executor runs each job as ``srun -n1 ...``) SLURM_JOB_NODELIST and
    SLURM_NODELIST may name the step's node only.  The environment is the fallback.
    """
    job = os.environ.get("SLURM_JOB_ID")
    nodelist = ""
    if job:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            nodelist = subprocess.run(["squeue", "-h", "-j", job, "-o", "%N"], capture_output=True, text=True,
                                      timeout=30, check=False).stdout.strip()
    nodelist = nodelist or os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST") or ""
    if not nodelist:
        if not job:
            raise RuntimeError("not inside a SLURM allocation: SLURM_JOB_ID is not set")
        raise RuntimeError(f"SLURM job {job}: no node list (squeue and SLURM_JOB_NODELIST are empty)")
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                         check=True, timeout=30).stdout.split()
    if not out:
        raise RuntimeError(f"no nodes in the node list {nodelist!r} of SLURM job {job}")
    return out


def slurm_node_addresses(nodes: List[str]) -> Dict[str, str]:
    """{node name: NodeAddr} from ``scontrol show node`` (the address SLURM itself reaches the node
    at); a node SLURM does not describe maps to its name."""
    out: Dict[str, str] = {}
    try:
        text = subprocess.run(["scontrol", "show", "node", "-o", ",".join(nodes)], capture_output=True,
                              text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        text = ""
    for line in text.splitlines():
        kv = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if kv.get("NodeName"):
            out[kv["NodeName"]] = kv.get("NodeAddr") or kv["NodeName"]
    return {n: out.get(n, n) for n in nodes}


def slurmctld_address() -> Optional[str]:
    """The address of the (first) SLURM controller, from ``scontrol show config``'s SlurmctldHost
    (``name(addr)`` or ``name``), or None."""
    try:
        text = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30,
                              check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in text.splitlines():
        if line.startswith("SlurmctldHost[0]"):
            val = line.split("=", 1)[1].strip()
            if "(" in val:
                return val.split("(", 1)[1].rstrip(")")
            return val or None
    return None


def _local_ip(ip: str) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((ip, 0))
        return True
    except OSError:
        return False


def node_address() -> str:
    """The address servers of tfconv should bind to on a SLURM cluster (Dask scheduler, Ray nodes).

    Inside a SLURM job: this node's NodeAddr (what slurmctld and the other nodes reach it at) when it
    is an address of this machine.  Else (or outside a job) the address of the interface that routes
    to the SLURM controller, else the host name's address.  Never loopback unless nothing else
    exists: the other nodes could not reach it.
    """
    cands: List[str] = []
    me = os.environ.get("SLURMD_NODENAME")
    if me and in_slurm_allocation():
        cands.append(slurm_node_addresses([me])[me])
    ctld = slurmctld_address()
    if ctld:
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((socket.gethostbyname(ctld), 9))
            cands.append(s.getsockname()[0])
    cands.append(socket.gethostname())
    for c in cands:
        with contextlib.suppress(OSError):
            ip = socket.gethostbyname(c)
            if not ip.startswith("127.") and _local_ip(ip):
                return ip
    return "127.0.0.1"


def slurm_job_cpus() -> Optional[int]:
    """The CPUs of the SLURM job this process runs in (SLURM_CPUS_PER_TASK), or None outside a job.

    The workflow's cluster rules use it inside a job the SLURM executor submitted, so that the job
    starts Ray/Dask with the CPUs the submitting Snakemake asked for (the job's own Snakemake runs
    with ``--cores all``, which can be more than the job holds)."""
    if os.environ.get("SLURM_JOB_ID") and os.environ.get("SLURM_CPUS_PER_TASK"):
        return int(os.environ["SLURM_CPUS_PER_TASK"])
    return None


def env_int(*names: str) -> Optional[int]:
    """The first of the SLURM variables `names` that holds a count ("8", "8(x2)", "8,4": 8), or None."""
    for n in names:
        v = os.environ.get(n, "")
        digits = v.split("(")[0].split(",")[0]  # "8(x2)" -> 8
        if digits.isdigit():
            return int(digits)
    return None


def step_ids(job: str, step_name: str) -> List[str]:
    """Ids ("<job>.<step>") of this job's steps named `step_name` that SLURM still lists."""
    try:
        out = subprocess.run(["squeue", "-h", "-s", "-j", job, "-o", "%i %j"], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [ln.split()[0] for ln in out.splitlines() if len(ln.split()) >= 2 and ln.split()[1] == step_name]
