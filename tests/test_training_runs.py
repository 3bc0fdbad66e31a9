"""The training probe for real: one rank on this CPU, and two local ranks under DDP and FSDP2 (Gloo)."""

from __future__ import annotations

import pytest
import torch

from clusterbench.judge import rule_checks
from clusterbench.model import Location, NotMeasured
from clusterbench.probes.training.figures import Peak, Price, loss_drop
from clusterbench.probes.training.loop import TrainingPlan, train
from clusterbench.probes.training.presets import PRESETS
from clusterbench.runners.training import TrainingRuns

# Not a real device's peak: a figure for the tests, so that the MFU arithmetic runs on a CPU.
TEST_PEAK = Peak(tflops=1.0, device="test: an assumed 1 TFLOP/s", source="tests/test_training_runs.py")


def tiny_plan(parallel: str = "ddp") -> TrainingPlan:
    return TrainingPlan(PRESETS["tiny"], "fp32", warmup=2, steps=8, parallel=parallel, split_steps=3)


def two_local_ranks(parallel: str, **overrides) -> TrainingRuns:
    settings = {"distributed": False, "backend": "gloo", "ranks": 2, "plan": tiny_plan(parallel),
                "location": Location("localhost", 0, "2 ranks"), "hosts": {0: "localhost", 1: "localhost"},
                "timeout_s": 60.0, "peak": TEST_PEAK, "why_no_peak": "", "price": Price(2.0, "EUR")}
    return TrainingRuns(**{**settings, **overrides})


def test_one_rank_trains_and_times_data_apart_from_the_step():
    result = train(tiny_plan(), torch.device("cpu"))
    assert result.ranks == 1 and len(result.step_s) == len(result.data_s) == len(result.losses) == 8
    assert all(s > 0 for s in result.step_s + result.data_s)
    assert loss_drop(result.losses) > 0.02, result.losses  # the loss falls: the probe trains
    assert result.exposed_communication_s == 0.0 and result.checksums and len(result.checksums) == 1


def test_two_ddp_ranks_scale_split_communication_and_catch_a_corrupted_replica():
    runs = two_local_ranks("ddp", corrupt_rank=1, efficiency_floor=0.0, floor_source="test floor")
    figures = {(m.metric, m.params["ranks"]): m for m in runs.measurements()}
    step = figures[("train.step_time_ms", 2)]
    assert len(step.samples) == 8 and step.details["forward_backward_no_sync_ms"] is not None
    assert step.details["exposed_communication_ms"] >= 0 and set(step.details["rank_step_median_ms"]) == {"0", "1"}
    assert step.details["rank_hosts"] == {"0": "localhost", "1": "localhost"}  # spawned ranks: all on this host
    assert step.details["fsdp_api"] == "n/a (not sharded)" and step.details["mixed_precision"] == "fp32 throughout"
    tokens = figures[("train.tokens_per_s", 2)].value
    assert tokens == pytest.approx(2 * 8 * 64 / (step.value / 1e3))
    assert figures[("train.mfu", 2)].value == pytest.approx(895_488 * tokens / 2 / 1e12)
    assert figures[("train.cost_per_mtokens", 2)].params["currency"] == "EUR"
    efficiency = figures[("train.scaling_efficiency", 2)]
    assert efficiency.value == pytest.approx(tokens / (2 * figures[("train.tokens_per_s", 1)].value))
    assert efficiency.details["largest_efficient_ranks"] == 2
    mismatch = figures[("train.params_mismatched", 2)]
    assert mismatch.value == 1 and mismatch.details["mismatched"] == {"1": "token_embedding.weight"}
    verdicts = {c.metric: c.verdict.value for c in rule_checks(runs.figures("train.params_mismatched"))}
    assert verdicts == {"train.params_mismatched": "FAIL"}
    assert "largest scale meeting the efficiency floor 0.000 (test floor): 2 ranks" in runs.footer()


def test_fsdp_trains_and_says_why_replicas_are_not_compared():
    runs = two_local_ranks("fsdp", price=None)
    losses = runs.figures("train.loss_drop")
    assert {m.params["parallel"] for m in losses} == {"fsdp"} and all(m.value > 0 for m in losses)
    with pytest.raises(NotMeasured, match="FSDP shards the parameters"):
        runs.figures("train.params_mismatched")
    with pytest.raises(NotMeasured, match="price_per_accelerator_hour"):
        runs.figures("train.cost_per_mtokens")
    (step,) = [m for m in runs.figures("train.step_time_ms") if m.params["ranks"] == 2]
    assert step.details["exposed_communication_ms"] is None and "FSDP" in step.details["split_not_measured"]
    # Which FSDP and which precision the figure was obtained with; fp32 on a CPU: no policy to cast.
    assert step.details["fsdp_api"] == "torch.distributed.fsdp.fully_shard"
    assert step.details["mixed_precision"] == "fp32 throughout (FSDP2 without mixed precision)"
    assert step.details["peak_device_memory"].startswith("n/a (cpu)")


def test_a_failed_training_run_is_not_trained_again_by_the_next_test(monkeypatch):
    calls = []

    def dies(self):
        calls.append(1)
        raise NotMeasured("rank 1 (localhost) did not arrive within 60 s")

    monkeypatch.setattr(TrainingRuns, "_measure", dies)
    runs = two_local_ranks("ddp")
    for _ in range(3):
        with pytest.raises(NotMeasured, match="did not arrive"):
            runs.runs()
    assert calls == [1]  # the deadline is waited out once, not once per test
