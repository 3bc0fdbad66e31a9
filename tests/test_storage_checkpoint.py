"""Checkpoint throughput: a real model and optimizer state saved with fsync, evicted, loaded and
compared; and the metadata rate of small files."""

import copy
import os

import pytest
import torch

from clusterbench.model import Location
from clusterbench.probes.storage import MetadataPlan, measure_metadata, probe_target
from clusterbench.probes.storage.checkpoint import CheckpointPlan, first_difference, measure_checkpoint, training_state

HERE = Location("node01", 0, "node")
TINY = CheckpointPlan(width=64, layers=2, repeats=2)


def test_checkpoint_round_trip_measures_save_and_load_of_the_file(workspace):
    facts = probe_target(workspace)
    save, load = measure_checkpoint(workspace, facts, HERE, TINY)
    assert (save.metric, load.metric, save.unit) == ("checkpoint.save_gbps", "checkpoint.load_gbps", "GB/s")
    size = save.params["bytes"]
    assert size > TINY.approx_bytes  # the tensors plus torch.save's container
    assert save.params == {"target": facts.target, "engine": "torch.save", "direct": False, "bytes": size}
    for measurement, seconds in ((save, save.details["seconds"]), (load, load.details["seconds"])):
        assert len(measurement.samples) == TINY.repeats
        assert measurement.samples == pytest.approx([size / s / 1e9 for s in seconds])
    assert save.details["fsync"] is True
    assert len(load.details["cached_fraction_before_load"]) == TINY.repeats
    # Eviction is advice; whatever stayed cached (or a RAM filesystem) is flagged on the load figure.
    assert load.details["page_cache_possible"] == (load.details["caveat"] is not None)
    assert os.listdir(workspace.path) == []


def test_a_changed_tensor_or_hyperparameter_is_found():
    state = training_state(TINY)
    assert first_difference(state, copy.deepcopy(state)) is None
    changed = copy.deepcopy(state)
    changed["model"]["1.weight"][3, 4] += 1
    assert first_difference(state, changed) == "state['model']['1.weight']: tensor values differ"
    changed = copy.deepcopy(state)
    changed["optimizer"]["param_groups"][0]["lr"] = 0.5
    assert "'lr'" in first_difference(state, changed)


def test_the_state_has_adamw_moments_and_leaves_the_callers_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    state = training_state(TINY)
    assert torch.equal(torch.rand(3), expected)
    moments = state["optimizer"]["state"][0]
    assert set(moments) >= {"exp_avg", "exp_avg_sq", "step"}


def test_standard_plans_are_about_64_mib_and_1_gib_and_shrink_to_fit():
    assert CheckpointPlan.standard(quick=True).approx_bytes == pytest.approx(64 << 20, rel=0.1)
    assert CheckpointPlan.standard(quick=False).approx_bytes == pytest.approx(1 << 30, rel=0.1)
    assert CheckpointPlan.standard(quick=True, max_bytes=16 << 20).approx_bytes <= 16 << 20


def test_metadata_rate_counts_create_stat_and_delete(workspace):
    facts = probe_target(workspace)
    plan = MetadataPlan(files=200, rounds=2)
    result = measure_metadata(workspace, facts, HERE, plan)
    assert (result.metric, result.unit) == ("storage.metadata_ops", "ops/s")
    assert len(result.samples) == 2 and result.value > 0
    phases = result.details["phases"]
    assert set(phases) == {"create", "stat", "delete"}
    # Each round's total: 3N operations over the three phases' time (the phase rates' harmonic mean).
    totals = [3 / sum(1 / rate for rate in rates) for rates in zip(*(phases[p]["samples"] for p in phases))]
    assert totals == pytest.approx(result.samples)
    assert os.listdir(workspace.path) == []
