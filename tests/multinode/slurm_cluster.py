"""A real single-host Slurm, started for the tests: munged, slurmctld and slurmd from the distribution,
with a minimal configuration in a temporary folder, and stopped again without a trace.

Everything lives under one folder (key, sockets, state, spool, logs, pid files) and the daemons talk
on ports picked free at start, so the machine's own Slurm configuration, if any, is never read or
touched: clients find this cluster through SLURM_CONF.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from test_multirank import free_port

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("srun", "sinfo", "munge")

SLURM_CONF = """\
ClusterName=clusterbench-test
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
# No cgroups in a container: track tasks by process tree, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MailProg=/bin/true
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


class SlurmUnavailable(RuntimeError):
    """Slurm cannot be started here; the message says precisely why."""


def _last_lines(path: Path, count: int = 3) -> str:
    if not path.exists():
        return f"(no {path.name})"
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-count:])


@dataclass
class SlurmCluster:
    root: Path
    host: str
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    steps_before: set[int] = field(default_factory=set)  # another Slurm's step daemons: not ours to stop

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    def environment(self) -> dict[str, str]:
        """The environment a client (srun, sinfo) needs to reach this cluster and no other."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        return {**env, "SLURM_CONF": str(self.conf)}

    def client(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), env=self.environment(), check=False, capture_output=True, text=True,
                              timeout=timeout)

    @classmethod
    def start(cls, root: Path, cpus: int = 2, ready_timeout_s: float = 30) -> SlurmCluster:
        for tool in DAEMONS + CLIENTS:
            if shutil.which(tool) is None:
                raise SlurmUnavailable(f"`{tool}` is not installed (apt-get install slurmd "
                                       "slurmctld slurm-client munge)")
        if os.geteuid() != 0:
            raise SlurmUnavailable("a private slurmd must run as root (it starts tasks as the submitting user)")
        cluster = cls(root=root, host=socket.gethostname(), steps_before=step_daemons())
        try:
            cluster._start_munge()
            cluster._write_conf(cpus)
            for daemon in ("slurmctld", "slurmd"):
                cluster._spawn(daemon, [daemon, "-D", "-f", str(cluster.conf)])
            cluster._wait_until_idle(ready_timeout_s)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _spawn(self, name: str, command: list[str]) -> None:
        with (self.root / f"{name}.out").open("w") as out:
            self.processes[name] = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                                    start_new_session=True)

    def _start_munge(self) -> None:
        munge = self.root / "munge"
        munge.mkdir(mode=0o711)  # munged insists that its socket folder be searchable, not writable, by others
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self._spawn("munged", ["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={munge / 'socket'}",
                               f"--pid-file={munge / 'munged.pid'}", f"--log-file={munge / 'munged.log'}",
                               f"--seed-file={munge / 'munged.seed'}"])
        deadline = time.monotonic() + 10
        while not (munge / "socket").exists():
            if self.processes["munged"].poll() is not None or time.monotonic() > deadline:
                raise SlurmUnavailable(f"munged did not start: {_last_lines(self.root / 'munged.out')}")
            time.sleep(0.05)

    def _write_conf(self, cpus: int) -> None:
        for folder in ("state", "spool"):
            (self.root / folder).mkdir()
        self.conf.write_text(SLURM_CONF.format(
            host=self.host, ctld_port=free_port(), slurmd_port=free_port(), root=self.root,
            munge_socket=self.root / "munge" / "socket", cpus=cpus,
        ))

    def _wait_until_idle(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise SlurmUnavailable(f"{name} exited with {process.returncode}: "
                                           f"{_last_lines(self.root / f'{name}.out')}")
            probe = self.client("sinfo", "--noheader", "--nodes", self.host, "--format=%T")
            state = (probe.stdout or probe.stderr).strip()
            if state == "idle":
                return
            time.sleep(0.2)
        raise SlurmUnavailable(f"node {self.host} not idle within {timeout_s:g} s (last state: {state!r}); "
                               f"slurmd: {_last_lines(self.root / 'slurmd.out')}")

    def stop(self) -> None:
        """SIGTERM every daemon (slurmd first: it ends its job steps), SIGKILL what lingers, then
        any slurmstepd that outlived its slurmd."""
        for name in ("slurmd", "slurmctld", "munged"):
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while (strays := step_daemons() - self.steps_before) and time.monotonic() < deadline:
            if time.monotonic() > deadline - 5:  # a step daemon ends on its own shortly after its step
                for pid in strays:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def leftovers(self) -> list[int]:
        """Processes of this cluster still alive: daemons and job step daemons."""
        alive = [p.pid for p in self.processes.values() if p.poll() is None]
        return alive + sorted(step_daemons() - self.steps_before)


def step_daemons() -> set[int]:
    """The pids of every live slurmstepd on the machine (a zombie waiting to be reaped is not live)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                name, state = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2]
                if name == "slurmstepd" and state != "Z":
                    pids.add(int(entry.name))
            except OSError:
                pass  # gone meanwhile
    return pids
