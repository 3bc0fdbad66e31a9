"""Spawned local ranks: results by rank, and every failure (raise, exit, kill, hang) ends within the deadline
with a one-line error naming the ranks, and with no child process left."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from clusterbench.runners.local_ranks import LocalRanksError, run_local_ranks

DEADLINE_S = 30.0
HANG_DEADLINE_S = 4.0
BIG = 16 << 20  # float elements: an all_reduce long enough to be in flight when a rank dies


def describe_world(rank: int, world_size: int) -> tuple:
    return rank, world_size, dist.get_world_size(), os.environ["GLOO_SOCKET_IFNAME"], os.environ["MASTER_ADDR"]


# Spawn with two ranks only: each spawned rank imports torch afresh, seconds of CPU apiece.
@pytest.mark.parametrize("start_method, world_size", [("forkserver", 3), ("spawn", 2)])
def test_results_come_back_as_a_list_indexed_by_rank(start_method, world_size):
    assert run_local_ranks(describe_world, world_size, timeout=DEADLINE_S, start_method=start_method) == [
        (rank, world_size, world_size, "lo", "127.0.0.1") for rank in range(world_size)
    ]


def record_pid(pid_dir: str, rank: int) -> None:
    Path(pid_dir, f"{rank}.pid").write_text(str(os.getpid()))


def raise_on_rank_1(rank: int, world_size: int, pid_dir: str) -> str:
    record_pid(pid_dir, rank)
    if rank == 1:
        raise ValueError("bad input on rank 1\nsecond line of detail")
    return "fine"


def die_mid_collective(rank: int, world_size: int, pid_dir: str, how: str) -> None:
    record_pid(pid_dir, rank)
    tensor = torch.ones(BIG)
    if rank == 1:
        dist.all_reduce(tensor, async_op=True)  # in flight when this rank dies
        if how == "exit":
            os._exit(7)
        os.kill(os.getpid(), signal.SIGKILL)
    dist.all_reduce(tensor)


def hang_on_rank_1(rank: int, world_size: int, pid_dir: str) -> None:
    record_pid(pid_dir, rank)
    if rank == 1:
        time.sleep(3600)
    dist.barrier()


def assert_no_child_left(pid_dir: Path, world_size: int) -> None:
    pids = [int(Path(pid_dir, f"{rank}.pid").read_text()) for rank in range(world_size)]
    assert multiprocessing.active_children() == []
    assert [pid for pid in pids if Path(f"/proc/{pid}").exists()] == []


def run_failing(fn, tmp_path: Path, *args, timeout: float = DEADLINE_S) -> tuple[LocalRanksError, float]:
    start = time.monotonic()
    with pytest.raises(LocalRanksError) as caught:
        run_local_ranks(fn, 2, args=(str(tmp_path), *args), timeout=timeout, collective_timeout=60)
    return caught.value, time.monotonic() - start


def test_an_exception_in_a_child_comes_back_as_a_one_line_message(tmp_path):
    error, _ = run_failing(raise_on_rank_1, tmp_path)
    assert error.failures == {1: "raised ValueError: bad input on rank 1"}
    assert str(error) == "1 of 2 local ranks failed: rank 1 raised ValueError: bad input on rank 1"
    assert_no_child_left(tmp_path, 2)


@pytest.mark.parametrize("how, reason", [("exit", "exited with code 7"), ("kill", "was killed by SIGKILL")])
def test_a_rank_dying_mid_collective_fails_the_run_fast(tmp_path, how, reason):
    error, elapsed = run_failing(die_mid_collective, tmp_path, how)
    assert list(error.failures)[0] == 1 and error.failures[1].startswith(reason)
    # The survivor fails on its own (Gloo sees the peer's socket close) or is stopped after the grace,
    # long before the deadline.
    assert 0 in error.failures and "deadline" not in error.failures[0]
    assert elapsed < DEADLINE_S / 2
    assert "\n" not in str(error) and "rank 1 " + reason in str(error)
    assert_no_child_left(tmp_path, 2)


def test_a_hanging_rank_fails_the_run_at_the_deadline(tmp_path):
    error, elapsed = run_failing(hang_on_rank_1, tmp_path, timeout=HANG_DEADLINE_S)
    assert error.failures[1] == f"did not report within the {HANG_DEADLINE_S:g} s deadline"
    assert set(error.failures) == {0, 1}
    assert HANG_DEADLINE_S <= elapsed < HANG_DEADLINE_S + 5
    assert_no_child_left(tmp_path, 2)
