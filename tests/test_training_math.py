"""The training probe's arithmetic against hand computations: FLOPs, MFU, efficiency, cost, loss drop,
and the parameter checksum's power to see one flipped bit."""

from __future__ import annotations

import pytest
import torch

from clusterbench.judge import rule_checks
from clusterbench.model import Location
from clusterbench.probes.training.checksum import ParameterChecksum, parameter_checksum
from clusterbench.probes.training.figures import loss_drop
from clusterbench.probes.training.flops import flops_per_token, mfu, model_flops
from clusterbench.probes.training.model import build_model
from clusterbench.probes.training.presets import PRESETS
from clusterbench.probes.training.scaling import (
    ScalePoint,
    cost_per_million_tokens,
    largest_efficient_scale,
    scaling_efficiency,
)
from clusterbench.runners.training import training_ladder


def test_tiny_model_flops_match_a_hand_count():
    model = build_model(PRESETS["tiny"], torch.device("cpu"), seed=0)
    # By hand, d=64, 2 layers, vocab 512, seq 64, 4 heads of 16:
    embeddings = 512 * 64 + 64 * 64  # token + position tables
    block = 2 * 64 + (64 * 192 + 192) + (64 * 64 + 64) + 2 * 64 + (64 * 256 + 256) + (256 * 64 + 64)
    parameters = embeddings + 2 * block + 2 * 64 + 64 * 512  # blocks, final norm, untied head
    count = model_flops(model)
    assert (count.parameters, count.embedding_parameters) == (parameters, embeddings) == (169_728, 36_864)
    assert count.dense_flops_per_token == 6 * (169_728 - 36_864) == 797_184
    assert count.attention_flops_per_token == 12 * 2 * 4 * 16 * 64 == 98_304
    assert count.flops_per_token == 895_488


def test_flop_count_is_palm_and_torchtitan_formula_for_a_large_model():
    # GPT-3 XL-like: 1.3e9 parameters of which 1e8 embedding, 24 layers, 16 heads of 128, seq 2048.
    count = flops_per_token(1_300_000_000, 100_000_000, 24, 16, 128, 2048)
    assert count.flops_per_token == 6 * 1.2e9 + 12 * 24 * 16 * 128 * 2048


def test_mfu_is_achieved_model_flops_over_peak():
    assert mfu(6e9, 50_000, 989.0) == pytest.approx(3e14 / 989e12)
    with pytest.raises(ValueError):
        mfu(6e9, 50_000, 0.0)


def test_scaling_efficiency_against_the_smallest_group():
    one = ScalePoint(1, "single", 1000.0)
    assert scaling_efficiency(ScalePoint(2, "intra-node", 1800.0), one) == pytest.approx(0.9)
    assert scaling_efficiency(ScalePoint(8, "inter-node", 8000.0), one) == pytest.approx(1.0)
    # Against a base of 2 ranks: 4 ranks doing 1.5x the throughput of 2 are 75% efficient.
    assert scaling_efficiency(ScalePoint(4, "inter-node", 3000.0),
                              ScalePoint(2, "intra-node", 2000.0)) == pytest.approx(0.75)


def test_largest_scale_meeting_the_floor_stops_at_the_first_miss():
    efficiencies = {1: 1.0, 2: 0.95, 4: 0.88, 8: 0.91}
    assert largest_efficient_scale(efficiencies, 0.9) == 2
    assert largest_efficient_scale(efficiencies, 0.85) == 8
    assert largest_efficient_scale(efficiencies, 1.01) is None


def test_cost_per_million_tokens():
    # 8 accelerators at 2.00 an hour = 16.00 an hour; 100k tokens/s = 360 M tokens an hour.
    assert cost_per_million_tokens(2.0, 8, 100_000) == pytest.approx(16.0 / 360.0)
    with pytest.raises(ValueError):
        cost_per_million_tokens(2.0, 8, 0.0)


def test_loss_drop_compares_first_and_last_fifth():
    assert loss_drop([10, 10, 9, 8, 7, 6, 5, 5, 4, 4]) == pytest.approx((10 - 4) / 10)
    assert loss_drop([5.0, 6.0]) == pytest.approx(-0.2)


def test_checksum_sees_one_flipped_bit_and_names_the_parameter():
    config = PRESETS["tiny"]
    a, b = (build_model(config, torch.device("cpu"), seed=3) for _ in range(2))
    assert parameter_checksum(a) == parameter_checksum(b)
    with torch.no_grad():
        b.blocks[1].mlp[0].weight.view(torch.int32).view(-1)[17] ^= 1  # the lowest mantissa bit
    assert parameter_checksum(a).first_difference(parameter_checksum(b)) == "blocks.1.mlp.0.weight"
    again = ParameterChecksum.from_json(parameter_checksum(b).to_json())
    assert again == parameter_checksum(b)


def test_ladder_starts_alone_and_shows_nodes_apart():
    hosts = {0: "a", 1: "a", 2: "b", 3: "b"}
    assert [(g.ranks, g.span) for g in training_ladder(hosts)] == [
        ((0,), "single"), ((0, 1), "intra-node"), ((0, 1, 2, 3), "inter-node"), ((0, 2), "inter-node"),
    ]


def test_rule_checks_fail_a_loss_that_rises_and_replicas_that_differ():
    from clusterbench.model import Measurement

    where = Location("h", 0, "2 ranks intra-node")
    rising = Measurement("train.loss_drop", -0.05, "fraction", {"ranks": 2}, where, samples=[5.0, 5.25])
    differ = Measurement("train.params_mismatched", 1.0, "count", {"ranks": 2}, where,
                         details={"mismatched": {"1": "token_embedding.weight"}, "ranks_compared": [0, 1],
                                  "parameters_compared": 30})
    loss_check, params_check = rule_checks([rising, differ])
    assert loss_check.verdict.value == "FAIL" and "did not fall" in loss_check.message
    assert params_check.verdict.value == "FAIL" and "rank 1 (first at token_embedding.weight)" in params_check.message
