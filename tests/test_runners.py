"""The runners' shared pieces: node leaders, scaling groups, and storage measured once per target."""

from __future__ import annotations

import pytest

from clusterbench.model import Location, NotMeasured
from clusterbench.profile import StorageSettings
from clusterbench.runners.groups import node_leaders, scaling_groups
from clusterbench.runners.storage import StorageRuns

# Two nodes of two ranks, listed out of order, with the second node's ranks first in the mapping.
HOSTS = {3: "n1", 2: "n1", 1: "n0", 0: "n0"}


def test_node_leaders_are_each_hosts_first_rank_in_rank_order():
    assert node_leaders(HOSTS) == {"n0": 0, "n1": 2}
    assert list(node_leaders({0: "b", 1: "a", 2: "b"})) == ["b", "a"]


def test_scaling_groups_double_up_to_the_world_then_split_intra_and_inter_node():
    assert [(g.ranks, g.span) for g in scaling_groups(HOSTS)] == [
        ((0, 1), "intra-node"), ((0, 1, 2, 3), "inter-node"), ((0, 2), "inter-node"),
    ]


def test_storage_one_per_node_measures_on_the_node_leaders_only():
    settings = StorageSettings(ranks="one-per-node")
    where = lambda rank: (lambda device: Location("n", rank, device))  # noqa: E731
    assert StorageRuns(settings, True, where(2), 2, HOSTS).measuring_ranks == (0, 2)
    assert StorageRuns(settings, True, where(3), 3, HOSTS).attempts("storage.randread_iops") == []
    assert StorageRuns(StorageSettings(), True, where(0), 0, None).measuring_ranks == (0,)


def test_a_storage_target_is_measured_once_and_its_failure_remembered(monkeypatch):
    calls = []

    def measure_storage(target, **kwargs):
        calls.append(str(target))
        raise NotMeasured(f"{target} is not a directory")

    monkeypatch.setattr("clusterbench.probes.storage.measure_storage", measure_storage)
    runs = StorageRuns(StorageSettings(targets=("/nowhere",)), True, lambda device: Location("h", 0, device), 0)
    for metric in ("storage.randread_iops", "storage.seqread_gbps"):
        [(_, figures)] = runs.attempts(metric)
        with pytest.raises(NotMeasured, match="/nowhere is not a directory"):
            figures()
    assert calls == ["/nowhere"]
