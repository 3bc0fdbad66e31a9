"""One pytest session across several ranks, started by real launchers on this machine's CPU (Gloo).

torchrun and mpiexec are started for real. The fault tests start two ranks the way torchrun does
(its environment contract: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) but without torchrun's
habit of killing every rank when one fails, as srun without --kill-on-bad-exit behaves: that is the
case where only clusterbench's deadline stands between a dead rank and a hang.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PASSING_PROFILE = """
[cluster]
name = "cpu-ranks"

[settings]
collective_timeout_s = {timeout}

[[expect]]
metric = "gemm.tflops"
params = {{ dtype = "fp32" }}
target = 1e-6
unit = "TFLOP/s"
provenance = "baseline"
source = "test fixture: any CPU passes"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def profile(tmp_path: Path, timeout: float = 60) -> Path:
    path = tmp_path / "cpu-ranks.toml"
    path.write_text(PASSING_PROFILE.format(timeout=timeout))
    return path


def results(report_dir: Path) -> dict:
    return json.loads((report_dir / "results.json").read_text())


def pytest_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["-m", "pytest", "-p", "no:cacheprovider", "--quick", f"--cluster={profile(tmp_path)}",
            f"--report-dir={tmp_path / 'report'}", *extra]


def check_two_rank_run(tmp_path: Path, proc: subprocess.CompletedProcess, launcher: str) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = results(tmp_path / "report")
    run = data["run"]
    assert (run["world_size"], run["launcher"], run["backend"]) == (2, launcher, "gloo")
    gemm = [m for m in data["measurements"] if m["metric"] == "gemm.tflops"]
    assert sorted(m["rank"] for m in gemm) == [0, 1]
    assert {c["rank"] for c in data["checks"] if c["metric"] == "gemm.tflops"} == {0, 1}
    assert data["verdict"] == "PASS"
    # Rank 0 alone talks to the terminal; rank 1 writes to its own log.
    assert proc.stdout.count("test session starts") == 1
    assert proc.stdout.count("clusterbench summary") == 1
    assert "test session starts" in (tmp_path / "report" / "logs" / "rank-1.log").read_text()


def test_torchrun_two_ranks_one_session(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", f"--master-port={free_port()}",
               *pytest_args(tmp_path, "-m", "compute", "-k", "fp32")]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    check_two_rank_run(tmp_path, proc, "torchrun")


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="mpiexec not installed (pip install mpich)")
def test_mpiexec_two_ranks_one_session(tmp_path):
    pytest.importorskip("mpi4py", reason="mpi4py not installed (pip install mpi4py)")
    command = ["mpiexec", "-n", "2", sys.executable, *pytest_args(tmp_path, "-m", "compute", "-k", "fp32")]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    check_two_rank_run(tmp_path, proc, "mpi")


# -- faults: ranks started with torchrun's environment contract, no launcher to kill survivors --------

FAULTY_SUITE = '''
import os, signal, time
import pytest
import torch
import torch.distributed as dist


def test_fails_on_rank_one_only(acceptance):
    if dist.get_rank() == 1:
        pytest.fail("rank one saw a broken device")


def test_rank_dies_mid_collective(acceptance):
    def all_reduce_until_killed():
        tensor = torch.ones(1 << 16)
        for step in range(100_000):
            if dist.get_rank() == 1 and step == 20:
                os.kill(os.getpid(), signal.SIGKILL)
            dist.all_reduce(tensor)
        raise AssertionError("rank 1 should have died")

    acceptance.measure("allreduce.busbw_gbps", all_reduce_until_killed, per="rank")


def test_after_the_loss(acceptance):
    acceptance.measure("gemm.tflops", lambda device: 1.0, params={"dtype": "fp32"})
'''


def start_ranks(tmp_path: Path, pytest_arguments: list[str], *, ranks: int = 2, cwd: Path | None = None,
                node_names: list[str] | None = None) -> list[subprocess.Popen]:
    """Start `ranks` pytest processes with torchrun's environment contract, one "node" each when
    `node_names` is given (CLUSTERBENCH_NODE_NAME, as Kubernetes users set it)."""
    port = free_port()
    procs = []
    for rank in range(ranks):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(ranks), "LOCAL_RANK": str(rank),
               "LOCAL_WORLD_SIZE": str(ranks), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        if node_names:
            env.update(CLUSTERBENCH_NODE_NAME=node_names[rank], LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *pytest_arguments]
        procs.append(subprocess.Popen(command, cwd=cwd or tmp_path, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    return procs


def wait_for_ranks(procs: list[subprocess.Popen], timeout: float) -> str:
    """Rank 0's output once every rank has ended; whatever is still running afterwards is killed."""
    try:
        out0, _ = procs[0].communicate(timeout=timeout)
        for proc in procs[1:]:
            proc.wait(timeout=60)
    finally:
        for proc in procs:
            proc.kill()
    return out0


def test_dead_rank_fails_fast_names_it_and_leaves_nothing_running(tmp_path):
    suite = tmp_path / "test_faults.py"
    suite.write_text(FAULTY_SUITE)
    deadline_s = 8
    started = time.monotonic()
    arguments = ["-p", "clusterbench.plugin", f"--rootdir={tmp_path}", "-c", os.devnull,
                 f"--cluster={profile(tmp_path, deadline_s)}", f"--report-dir={tmp_path / 'report'}", str(suite)]
    procs = start_ranks(tmp_path, arguments)
    try:
        out0, _ = procs[0].communicate(timeout=120)
        procs[1].wait(timeout=30)
    finally:
        for proc in procs:
            proc.kill()
    elapsed = time.monotonic() - started
    assert procs[1].returncode == -9  # the test double killed itself
    assert procs[0].returncode == 1, out0
    assert elapsed < 3 * deadline_s + 60, f"took {elapsed:.0f} s"

    data = results(tmp_path / "report")
    outcomes = {t["nodeid"].split("::")[-1]: t for t in data["tests"]}
    # A failure on one rank is the failure of all, with the rank and host named.
    one = outcomes["test_fails_on_rank_one_only"]
    assert one["outcome"] == "failed" and "rank 1 (" in one["message"] and "broken device" in one["message"]
    # The dead rank is named within the deadline, and everything after it fails without hanging.
    dead = outcomes["test_rank_dies_mid_collective"]
    assert dead["outcome"] == "failed"
    assert f"rank 1 ({socket.gethostname()}) did not arrive within {deadline_s} s" in dead["message"]
    after = outcomes["test_after_the_loss"]
    assert after["outcome"] == "failed" and after["message"].startswith("not run:")
    assert data["verdict"] == "FAIL" and data["run"]["finished_at"]
    assert "did not arrive" in out0  # rank 0 told the terminal too
    for proc in procs:
        assert proc.poll() is not None


def test_pairwise_and_scaling_across_four_nodes(tmp_path):
    """Four single-rank "nodes" (named apart, sharing loopback): the pairwise node test pairs them for
    real, and the scaling test shows inter-node groups. Tolerance is wide: this checks the mechanics
    on a noisy 2-core machine, while the blame rule itself is tested on exact figures elsewhere."""
    path = tmp_path / "four-nodes.toml"
    path.write_text('[cluster]\nname = "four"\n[settings]\noutlier_tolerance = 0.9\ncollective_timeout_s = 60\n')
    arguments = ["--quick", f"--cluster={path}", f"--report-dir={tmp_path / 'report'}", "-m", "network",
                 "-k", "pairwise or scaling"]
    procs = start_ranks(tmp_path, arguments, ranks=4, cwd=REPO_ROOT, node_names=["n0", "n1", "n2", "n3"])
    out0 = wait_for_ranks(procs, timeout=240)
    assert procs[0].returncode == 0, out0
    data = results(tmp_path / "report")
    assert data["run"]["hosts"] == ["n0", "n1", "n2", "n3"]
    pairs = [m for m in data["measurements"] if m["metric"] == "pairwise.busbw_gbps"]
    assert sorted(tuple(m["details"]["pair"]) for m in pairs) == [("n0", "n1"), ("n2", "n3")]
    assert all(m["value"] > 0 and m["params"]["round"] == 1 for m in pairs)
    scaling = {(m["params"]["ranks"], m["params"]["span"])
               for m in data["measurements"] if m["metric"].startswith("scaling.")}
    assert scaling == {(2, "inter-node"), (4, "inter-node")}


def test_a_bad_history_file_stops_every_rank_at_once_with_one_line(tmp_path):
    """Only rank 0 reads the history file; the other ranks must hear of its problem at once rather
    than wait out the deadline for a rank 0 that has gone."""
    history = tmp_path / "history.sqlite"
    history.write_text("not a database\n")
    deadline_s = 60
    arguments = [f"--cluster={profile(tmp_path, deadline_s)}", f"--report-dir={tmp_path / 'report'}",
                 f"--history={history}", "-m", "compute", "-k", "fp32"]
    started = time.monotonic()
    procs = start_ranks(tmp_path, arguments, cwd=REPO_ROOT)
    try:
        outputs = [proc.communicate(timeout=deadline_s + 60)[0] for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    assert time.monotonic() - started < deadline_s / 2, "a rank waited for the deadline"
    for rank, (proc, output) in enumerate(zip(procs, outputs)):
        if rank:  # ranks other than 0 write to their own log, as in every run
            output = (tmp_path / "report" / "logs" / f"rank-{rank}.log").read_text()
        assert proc.returncode == 4, output  # pytest's usage error
        assert "Traceback" not in output
        errors = [line for line in output.splitlines() if line.startswith("ERROR:")]
        assert len(errors) == 1 and "not an SQLite database" in errors[0] and str(history) in errors[0], output
        if rank:
            assert errors[0].startswith(f"ERROR: rank 0 ({socket.gethostname()}) cannot start the run: ")
    assert history.read_text() == "not a database\n"  # left as it was
