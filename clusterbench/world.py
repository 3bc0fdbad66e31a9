"""Which launcher started this process, and where it sits in the job: rank, size, rendezvous address.

clusterbench never launches a cluster job itself; it reads what torchrun, Slurm's srun or an MPI
launcher already told the process, and otherwise runs as a world of one.
"""

from __future__ import annotations

import os
import re
import socket
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from clusterbench.errors import ClusterbenchError

DEFAULT_PORT = 29500
MPI_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")


class LaunchError(ClusterbenchError):
    """The launcher's environment is incomplete or contradictory."""


@dataclass(frozen=True)
class World:
    launcher: str  # "torchrun", "slurm", "mpi" or "local"
    rank: int
    size: int
    local_rank: int
    local_size: int
    master_addr: str
    master_port: int
    host: str

    @property
    def is_distributed(self) -> bool:
        return self.size > 1


def expand_hostlist(hostlist: str) -> list[str]:
    """Expand a Slurm host list such as 'gpu[01-03,07],login1' into host names, in order."""
    hosts: list[str] = []
    for match in re.finditer(r"([^,\[]+)(?:\[([^\]]+)\])?([^,]*)", hostlist):
        prefix, ranges, suffix = match.groups()
        if not ranges:
            hosts.append(prefix + suffix)
            continue
        for part in ranges.split(","):
            low, _, high = part.partition("-")
            if not high:
                hosts.append(f"{prefix}{low}{suffix}")
                continue
            width = len(low)
            hosts.extend(f"{prefix}{n:0{width}d}{suffix}" for n in range(int(low), int(high) + 1))
    return hosts


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except KeyError:
        raise LaunchError(f"launcher environment lacks {name}") from None
    except ValueError:
        raise LaunchError(f"{name}={env[name]!r} is not an integer") from None


def _from_torchrun(env: Mapping[str, str], host: str) -> World:
    return World(
        launcher="torchrun",
        rank=_int(env, "RANK"),
        size=_int(env, "WORLD_SIZE"),
        local_rank=_int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0,
        local_size=_int(env, "LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in env else 1,
        master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
        master_port=_int(env, "MASTER_PORT") if "MASTER_PORT" in env else DEFAULT_PORT,
        host=host,
    )


def _from_slurm(env: Mapping[str, str], host: str) -> World:
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or host
    if "MASTER_PORT" in env:
        port = _int(env, "MASTER_PORT")
    else:
        # Every task of a step must agree on the port without talking: derive it from the job and
        # step IDs, away from the well-known range.
        job_step = f"{env.get('SLURM_JOB_ID', '0')}.{env.get('SLURM_STEP_ID', '0')}"
        port = 20000 + zlib.crc32(job_step.encode()) % 20000
    tasks_per_node = env.get("SLURM_STEP_TASKS_PER_NODE", "1").split("(")[0]
    return World(
        launcher="slurm",
        rank=_int(env, "SLURM_PROCID"),
        size=_int(env, "SLURM_STEP_NUM_TASKS"),
        local_rank=_int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0,
        local_size=int(tasks_per_node) if tasks_per_node.isdigit() else 1,
        master_addr=env.get("MASTER_ADDR") or expand_hostlist(nodelist)[0],
        master_port=port,
        host=host,
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _from_mpi(host: str) -> World:
    try:
        from clusterbench.probes.mpi_allreduce import import_mpi

        # This is the run's first import of mpi4py.MPI: import_mpi starts MPI at FUNNELED as OSU and
        # IMB do, not at mpi4py's default MULTIPLE, which changes what the MPI probe measures.
        MPI = import_mpi()
    except ImportError:
        raise LaunchError(
            "started by an MPI launcher but mpi4py is not installed: pip install 'clusterbench[mpi]'"
        ) from None
    comm = MPI.COMM_WORLD
    # Rank 0 offers the rendezvous address; everyone learns it over MPI, so no environment is needed.
    address = (socket.gethostbyname(host), _free_port()) if comm.Get_rank() == 0 else None
    master_addr, master_port = comm.bcast(address, root=0)
    node_comm = comm.Split_type(MPI.COMM_TYPE_SHARED)
    world = World(
        launcher="mpi",
        rank=comm.Get_rank(),
        size=comm.Get_size(),
        local_rank=node_comm.Get_rank(),
        local_size=node_comm.Get_size(),
        master_addr=master_addr,
        master_port=master_port,
        host=host,
    )
    node_comm.Free()
    return world


def node_name(env: Mapping[str, str]) -> str:
    """This rank's node as the job knows it: CLUSTERBENCH_NODE_NAME when set (on Kubernetes, from
    the downward API's spec.nodeName, since pod host names are per pod), else Slurm's node name,
    else the host name."""
    return env.get("CLUSTERBENCH_NODE_NAME") or env.get("SLURMD_NODENAME") or socket.gethostname()


def detect_world(env: Mapping[str, str] | None = None) -> World:
    """The world this process belongs to, from the launcher's environment (torchrun first: it may
    itself run under srun or mpirun, and its variables then describe the ranks it started)."""
    env = os.environ if env is None else env
    host = node_name(env)
    if "TORCHELASTIC_RUN_ID" in env or {"RANK", "WORLD_SIZE", "MASTER_ADDR"} <= env.keys():
        return _from_torchrun(env, host)
    # SLURM_STEP_NUM_TASKS is set by srun only; under a bare salloc/sbatch shell it is absent and
    # pytest runs as a world of one instead of waiting for tasks that were never started.
    if "SLURM_PROCID" in env and "SLURM_STEP_NUM_TASKS" in env:
        return _from_slurm(env, host)
    if any(name in env for name in MPI_SIZE_VARS):
        return _from_mpi(host)
    return World("local", 0, 1, 0, 1, "127.0.0.1", DEFAULT_PORT, host)
