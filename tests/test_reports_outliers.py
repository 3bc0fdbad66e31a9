"""The straggler rule: worse than the peers' median by more than the tolerance AND by a robust z-score."""

from __future__ import annotations

import random

from clusterbench.model import Location, Measurement
from clusterbench.reports.stragglers import DEVICE, NODE, find_stragglers, peer_groups, per_rank_measurements


def _gpu(host: str, gpu: int, value: float, metric: str = "gemm.tflops", **params) -> Measurement:
    rank = int(host.removeprefix("n")) * 8 + gpu
    return Measurement(metric, value, "TFLOP/s", params or {"dtype": "bf16"}, Location(host, rank, f"cuda:{gpu}"))


def test_the_slow_device_is_named_and_its_healthy_peers_are_not():
    values = [790.0, 792.0, 788.0, 791.0, 600.0, 789.0, 793.0, 790.5]
    stragglers = find_stragglers([_gpu("n1", i, v) for i, v in enumerate(values)], tolerance=0.05)
    assert [(s.level, s.where) for s in stragglers] == [(DEVICE, "n1/cuda:4")]
    (slow,) = stragglers
    assert slow.median == 790.25 and abs(slow.shortfall - (790.25 - 600) / 790.25) < 1e-12
    assert slow.robust_z > 3.5 and "24.1% below the median" in slow.describe()


def test_a_spread_within_the_tolerance_blames_nobody_even_when_the_mad_is_tiny():
    values = [790.0] * 7 + [770.0]  # 2.5% behind, MAD 0: "significant" but within 5%
    assert find_stragglers([_gpu("n1", i, v) for i, v in enumerate(values)], tolerance=0.05) == []
    flagged = find_stragglers([_gpu("n1", i, v) for i, v in enumerate(values)], tolerance=0.02)
    assert [s.where for s in flagged] == ["n1/cuda:7"] and flagged[0].robust_z is None


def test_a_naturally_noisy_figure_does_not_blame_its_slower_half():
    # A 2-core CPU's GEMM: widely spread, the slowest 12% behind the median but well within 3.5 MADs.
    values = [100.0, 80.0, 120.0, 90.0, 110.0, 85.0, 115.0, 88.0]
    assert find_stragglers([_gpu("n1", i, v) for i, v in enumerate(values)], tolerance=0.05) == []


def test_lower_is_better_blames_the_high_one_and_never_the_fast_one():
    temperatures = [Measurement("gpu.temperature_c", t, "C", {}, Location("n1", i, f"cuda:{i}"))
                    for i, t in enumerate([60.0, 61.0, 59.0, 88.0, 60.5, 40.0])]
    stragglers = find_stragglers(temperatures, tolerance=0.05)
    assert [s.device for s in stragglers] == ["cuda:3"]  # cuda:5 at 40 C is an outlier, but a good one


def test_a_whole_slow_node_is_named_at_node_level_first():
    measurements = [_gpu(f"n{h}", g, 790.0 + g * 0.5) for h in range(6) for g in range(8)]
    measurements += [_gpu("n6", g, 700.0 + g * 0.5) for g in range(8)]
    stragglers = find_stragglers(measurements, tolerance=0.05)
    assert (stragglers[0].level, stragglers[0].where) == (NODE, "n6")
    assert {s.where for s in stragglers[1:]} == {f"n6/cuda:{g}" for g in range(8)}


def test_figures_of_different_params_are_never_compared():
    measurements = [_gpu("n1", i, 790.0, dtype="bf16") for i in range(4)]
    measurements += [_gpu("n1", i, 1500.0, dtype="fp8") for i in range(3)]
    assert len(peer_groups(measurements)) == 2
    assert find_stragglers(measurements, tolerance=0.05) == []


def test_job_aggregates_and_one_device_measured_by_several_ranks_are_left_out():
    aggregate = Measurement("storage.randread_iops", 10.0, "IOPS", {"ranks": 4},
                            Location("*", -1, "aggregate of 4 ranks"))
    shared_cpu = [Measurement("gemm.tflops", v, "TFLOP/s", {"dtype": "fp32"}, Location("vm", r, "cpu"))
                  for r, v in enumerate([0.05, 0.05, 0.01])]
    assert peer_groups([aggregate] + shared_cpu) == []


def test_two_peers_are_too_few_to_tell_which_is_slow():
    assert find_stragglers([_gpu("n1", 0, 790.0), _gpu("n1", 1, 400.0)], tolerance=0.05) == []


def test_normal_noise_over_thousands_of_devices_names_nobody_but_a_real_straggler_still_shows():
    rng = random.Random(3)
    # 62 +- 2 C: a 5% tolerance is 1.5 sigma, so only the z-score stands between noise and blame.
    temperatures = [Measurement("gpu.temperature_c", rng.gauss(62, 2), "C", {},
                                Location(f"n{i // 8}", i, f"cuda:{i % 8}"))
                    for i in range(8192)]
    assert find_stragglers(temperatures, tolerance=0.05) == []
    temperatures[4242].value = 62 + 12.0  # 6 sigma: a GPU with a failing fan
    assert [s.where for s in find_stragglers(temperatures, tolerance=0.05)] == ["n530/cuda:2"]


def test_the_terminal_summary_names_the_worst_stragglers_first():
    from clusterbench.reports.terminal import render_summary
    from synthetic_run import synthetic_results

    results, faults = synthetic_results(8)
    text = render_summary(results, width=160, color=False)
    table = text[text.index("Stragglers: worse than their peers' median"):]
    first_row = table.splitlines()[4]
    assert first_row.startswith(f"│ {faults.slow_node} ") and "memory.copy_gbps" in first_row  # the node, at node level
    assert f"{faults.slow_device[0]}/cuda:3" in table and "more in report.html" in table


def test_a_training_groups_ranks_are_placed_on_the_hosts_its_details_name():
    """Per-rank step times become one figure per rank, on the host the training run recorded; a rank
    no figure places is 'rank N', never silently put on rank 0's host."""
    params = {"preset": "tiny", "ranks": 3}
    step = Measurement("train.step_time_ms", 30.0, "ms", params, Location("n0", 0, "3 ranks inter-node"),
                       details={"rank_step_median_ms": {"0": 29.0, "1": 30.0, "2": 45.0},
                                "rank_hosts": {"0": "n0", "1": "n0"}})
    per_rank = per_rank_measurements([step])
    assert [(m.location.host, m.location.rank, m.value) for m in per_rank] == [("n0", 0, 29.0), ("n0", 1, 30.0),
                                                                               ("rank 2", 2, 45.0)]
    assert all(m.metric == "train.step_time_ms" and m.params == params for m in per_rank)
