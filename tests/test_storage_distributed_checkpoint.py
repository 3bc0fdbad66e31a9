"""The sharded checkpoint through torch.distributed.checkpoint, on two local ranks (Gloo) writing
into one directory, as ranks of a job write into a shared filesystem."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from clusterbench.model import Location
from clusterbench.probes.storage import CheckpointGroup, CheckpointPlan, Workspace, probe_target
from clusterbench.probes.storage.distributed_checkpoint import (
    DCP_FILE_NAMES,
    ENGINE,
    measure_distributed_checkpoint,
    withdraw_from_checkpoint,
)
from clusterbench.runners.local_ranks import LocalRanksError, run_local_ranks

TINY = CheckpointPlan(width=64, layers=2, repeats=2)
DEADLINE_S = 90.0


def checkpoint_on_rank(rank: int, world_size: int, targets: list[str]):
    """Each rank works in a workspace of its own in its target, as measure_storage makes one."""
    group = CheckpointGroup(None, rank, world_size)
    with Workspace.create(Path(targets[rank]), None) as workspace:
        facts = probe_target(workspace)
        figures = measure_distributed_checkpoint(workspace, facts, Location(f"node{rank}", rank, "node"), TINY, group)
    return [(m.metric, m.value, m.params,
             m.details["ranks_writing"]) for m in figures], workspace.cleanup_report.complete


def test_two_ranks_write_and_read_one_sharded_checkpoint(tmp_path):
    target = str(tmp_path)
    results = run_local_ranks(checkpoint_on_rank, 2, args=([target, target],), timeout=DEADLINE_S)
    for figures, cleaned in results:
        assert cleaned
        assert [metric for metric, *_ in figures] == ["checkpoint.save_gbps", "checkpoint.load_gbps"]
        for _, value, params, writers in figures:
            assert value > 0 and writers == 2
            assert params["engine"] == ENGINE and params["bytes"] == results[0][0][0][2]["bytes"]
    assert list(tmp_path.iterdir()) == []  # every workspace and checkpoint directory removed


def test_ranks_that_do_not_share_the_directory_fail_together_with_one_line(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(LocalRanksError) as caught:
        run_local_ranks(checkpoint_on_rank, 2, args=([str(tmp_path / "a"), str(tmp_path / "b")],), timeout=DEADLINE_S)
    assert set(caught.value.failures) == {0, 1}  # both ranks fail, neither waits for the other
    for message in caught.value.failures.values():
        assert "not run: rank 1 on node1: rank 0's directory" in message and "not inside this rank's target" in message
    assert list((tmp_path / "a").iterdir()) == list((tmp_path / "b").iterdir()) == []


def withdraw_on_rank_1(rank: int, world_size: int, target: str):
    if rank == 1:
        withdraw_from_checkpoint(CheckpointGroup(None, 1, 2), target, "node1", "storage target full")
    return checkpoint_on_rank(rank, world_size, [target, target])


def test_a_rank_that_failed_before_its_checkpoint_releases_the_others_at_once(tmp_path):
    start = time.monotonic()
    with pytest.raises(LocalRanksError) as caught:
        run_local_ranks(withdraw_on_rank_1, 2, args=(str(tmp_path),), timeout=DEADLINE_S)
    assert time.monotonic() - start < DEADLINE_S / 2  # not a deadline that ran out
    assert "rank 1 on node1: could not measure (storage target full)" in caught.value.failures[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "name, owned",
    [("__0_0.distcp", True), ("__12_3.distcp", True), (".metadata", True), (".metadata.tmp", True),
     ("__1.metadata", True), ("notes.txt", False), ("__0_0.distcp.bak", False), ("../x", False)],
)
def test_only_the_checkpoint_writers_file_names_are_removed_with_its_directory(name, owned):
    assert bool(DCP_FILE_NAMES.fullmatch(name)) is owned


def test_a_strangers_file_in_a_checkpoint_directory_is_left_and_reported(tmp_path):
    with Workspace.create(tmp_path, None) as workspace:
        directory = workspace.subdirectory("dcp-0", DCP_FILE_NAMES)
        (directory / "__0_0.distcp").write_bytes(b"ours")
        (directory / "someone-elses").write_text("not ours")
        workspace.remove("dcp-0")
    report = workspace.cleanup_report
    assert not report.complete and report.left_behind == ["dcp-0/someone-elses (not created by "
                                                          "clusterbench; left in place)"]
    assert [p.name for p in directory.iterdir()] == ["someone-elses"]
