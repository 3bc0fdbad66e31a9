"""CollectiveRuns: each sweep, the scaling groups and the pairwise test are measured once per run, and a
failure is not measured again (it would wait out the deadline a second time)."""

from __future__ import annotations

import pytest

from clusterbench.model import Location, NotMeasured
from clusterbench.runners.collectives import CollectiveRuns, sweep_plan
from clusterbench.runners.local_ranks import LocalRanksError


def runs(**changes) -> CollectiveRuns:
    settings = dict(distributed=False, backend="gloo", ranks=2, plan=sweep_plan(on_gpu=False, quick=True, timeout_s=5),
                    location=Location("h", 0, "2 ranks"), hosts={0: "h", 1: "h"})
    return CollectiveRuns(**{**settings, **changes})


@pytest.fixture
def dead_local_ranks(monkeypatch):
    """run_local_ranks as it ends when a rank hangs: LocalRanksError after the deadline. Records the work
    each call was to run on the ranks."""
    calls = []

    def fail(fn, world_size, **kwargs):
        work, _ = kwargs["args"]
        calls.append(work.__name__)
        raise LocalRanksError({1: "did not report within the 15 s deadline"}, world_size)

    monkeypatch.setattr("clusterbench.runners.local_ranks.run_local_ranks", fail)
    return calls


def test_a_failed_sweep_fails_the_next_test_at_once_without_sweeping_again(dead_local_ranks):
    collective_runs = runs()
    for _ in range(3):  # its busbw, time and #wrong tests
        with pytest.raises(LocalRanksError, match="rank 1 did not report"):
            collective_runs.sweeps("all_reduce")
    assert dead_local_ranks == ["_sweep_all_modes"]
    with pytest.raises(LocalRanksError):
        collective_runs.sweeps("all_gather")  # another op is its own measurement
    assert dead_local_ranks == ["_sweep_all_modes"] * 2


def test_failed_scaling_is_not_measured_again(dead_local_ranks):
    collective_runs = runs()
    for _ in range(2):
        with pytest.raises(LocalRanksError):
            collective_runs.scaling()
    assert dead_local_ranks == ["_sweep_scaling"]


def test_a_successful_sweep_is_shared_by_every_test(monkeypatch):
    calls = []

    def sweep(fn, world_size, **kwargs):
        _, (op, *_) = kwargs["args"]
        calls.append(op)
        return [["sweeps of " + op]] * world_size

    monkeypatch.setattr("clusterbench.runners.local_ranks.run_local_ranks", sweep)
    collective_runs = runs()
    assert collective_runs.sweeps("broadcast") is collective_runs.sweeps("broadcast")
    assert calls == ["broadcast"]


def test_not_measured_is_remembered_with_its_reason():
    collective_runs = runs(ranks=1, hosts={0: "h"})
    for _ in range(2):
        with pytest.raises(NotMeasured, match="all_reduce needs at least 2 ranks; this run has 1"):
            collective_runs.sweeps("all_reduce")


def test_a_failed_pairwise_test_is_not_measured_again(monkeypatch):
    calls = []

    def pairs(self, tolerance):
        calls.append(tolerance)
        raise RuntimeError("rank 4 (n2) did not arrive within 60 s")

    monkeypatch.setattr(CollectiveRuns, "_measure_pairwise", pairs)
    collective_runs = runs(distributed=True, ranks=4, hosts={0: "n0", 1: "n1", 2: "n2", 3: "n3"})
    for _ in range(2):
        with pytest.raises(RuntimeError, match="did not arrive"):
            collective_runs.pairwise(0.1)
    assert calls == [0.1]
