"""Acceptance: the real tools as second opinions, where they are installed.

perftest's ib_write_bw between paired nodes, each HCA port; nccl-tests' own binaries on a single
node, their busbw shown and judged beside our sweep's at the same sizes; DCGM's diagnostic once per
node, each of its results a check with DCGM's error code and recovery action. A tool that is not
installed, or a layout the tool cannot run in (one node for ib_write_bw, several for nccl-tests), is
NOT MEASURED with the reason.
"""

import pytest

from clusterbench.judge.second_opinion import compare_busbw, dcgm_result_checks, second_opinion_checks
from clusterbench.model import NotMeasured
from clusterbench.probes.vendor import dcgm_diag, nccl_tests, perftest

OPS = tuple(nccl_tests.BINARIES)
_NCCL_TESTS_RUNS: dict[tuple, list] = {}  # each op's binary runs once per session, for all its tests


def not_measured(reason):
    def raise_it():
        raise NotMeasured(reason)
    return raise_it


@pytest.mark.network
def test_vendor_perftest_write_bw(acceptance):
    """ib_write_bw --report_gbits over every ACTIVE port two paired nodes share, one link at a time."""
    world, settings = acceptance.world, acceptance.profile.settings
    node = acceptance.location("node")
    if not world.is_distributed:
        reason = f"ib_write_bw runs between two nodes; this run is one process on {world.host}"
        acceptance.measure_attempts(perftest.METRIC, [(node, not_measured(reason))])
        return
    duration_s = 2 if acceptance.quick else 5
    offer = perftest.node_offer(world.host, world.rank) if world.local_rank == 0 else None
    try:
        outcomes = perftest.measure_between_nodes(
            perftest.TorchExchange(settings.collective_timeout_s), offer, duration_s=duration_s,
            timeout_s=min(duration_s + 60, settings.collective_timeout_s / 2))
        attempts = [(o.location, o.measurement) for o in outcomes]
    except NotMeasured as exc:  # every rank alike: too few nodes
        attempts = [(node, not_measured(str(exc)))]
    acceptance.measure_attempts(perftest.METRIC, attempts if acceptance.is_reporter else [])


def nccl_tests_figures(acceptance, op):
    """nccl-tests' figures of `op` on this node (run on the node's first local rank, once per session)."""
    import torch

    binary = nccl_tests.find_binary(op, acceptance.profile.settings.nccl_tests_dir)
    runs = acceptance.runners.collectives
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    reason = nccl_tests.single_node_reason(set(runs.rank_hosts.values()), visible)
    if reason:
        raise NotMeasured(reason)
    # As many GPUs as our sweep ran on (its ranks take GPUs 0..N-1, as nccl-tests' -g N does): a busbw
    # of 4 GPUs beside one of 8 would differ by design.
    ngpus = runs.ranks
    if ngpus > visible:
        raise NotMeasured(f"our sweep ran {ngpus} ranks on this node's {visible} visible GPUs; nccl-tests -g "
                          f"{ngpus} cannot run the same layout")
    key = (op, binary, runs.plan.sizes[-1], ngpus, runs.plan.dtype)
    if key not in _NCCL_TESTS_RUNS:
        _NCCL_TESTS_RUNS[key] = nccl_tests.run_nccl_tests(
            op, binary, max_bytes=runs.plan.sizes[-1], ngpus=ngpus, dtype=runs.plan.dtype,
            # The node's other ranks wait for this test's outcome within the run's deadline.
            location=acceptance.location("node"), timeout_s=acceptance.profile.settings.collective_timeout_s)
    return _NCCL_TESTS_RUNS[key]


def our_busbw(acceptance, op):
    """Our sweep's busbw figures of `op` (every rank joins the sweep; it is measured once per run), or
    none where nccl-tests cannot be compared with them here."""
    try:
        nccl_tests.find_binary(op, acceptance.profile.settings.nccl_tests_dir)
        sweeps = acceptance.runners.collectives.sweeps(op)
    except NotMeasured:
        return []
    return [m for sweep in sweeps for m in sweep.measurements() if m.metric.endswith(".busbw_gbps")]


def side_by_side(comparisons, op):
    lines = [f"{op}: nccl-tests beside clusterbench (busbw, GB/s)",
             f"{'size (B)':>12} {'mode':>12} {'nccl-tests':>11} {'ours':>9} {'gap':>7}"]
    for c in comparisons:
        ours = f"{c.ours_gbps:9.2f}" if c.ours_gbps is not None else f"{'-':>9}"
        gap = f"{c.gap:7.1%}" if c.gap is not None else f"{'-':>7}"
        mode = "in-place" if c.inplace else "out-of-place"
        lines.append(f"{c.size_bytes:>12} {mode:>12} {c.theirs_gbps:11.2f} {ours} {gap}")
    return "\n".join(lines)


@pytest.mark.network
@pytest.mark.parametrize("op", OPS)
def test_vendor_nccl_tests_bus_bandwidth(acceptance, op):
    """nccl-tests' busbw at every size, judged as any figure and compared with ours at the same sizes."""
    ours = our_busbw(acceptance, op)
    tolerance = acceptance.profile.settings.second_opinion_tolerance

    def compare(figures):
        theirs = [m for m in figures if m.metric == nccl_tests.BUSBW_METRIC]
        comparisons = compare_busbw(theirs, ours)
        if comparisons:
            acceptance.show(side_by_side(comparisons, op))
        return second_opinion_checks(comparisons, tolerance, theirs[0].location if theirs else None)

    acceptance.also_judge(compare)
    acceptance.measure(nccl_tests.BUSBW_METRIC, lambda: nccl_tests_figures(acceptance, op), per="node",
                       compare_peers=False)


@pytest.mark.network
@pytest.mark.parametrize("op", OPS)
def test_vendor_nccl_tests_time(acceptance, op):
    acceptance.measure(nccl_tests.TIME_METRIC, lambda: nccl_tests_figures(acceptance, op), per="node",
                       compare_peers=False)


@pytest.mark.network
@pytest.mark.parametrize("op", OPS)
def test_vendor_nccl_tests_results_are_exact(acceptance, op):
    def wrong():
        figures = [m for m in nccl_tests_figures(acceptance, op) if m.metric == nccl_tests.WRONG_METRIC]
        if not figures:
            raise NotMeasured(f"nccl-tests printed no #wrong count for {op} (validation off, or an older build)")
        return figures

    acceptance.measure(nccl_tests.WRONG_METRIC, wrong, per="node", compare_peers=False)


@pytest.mark.health
def test_vendor_dcgm_diag(acceptance):
    """dcgmi diag -r <dcgm_diag_level> -j once per node; its Fail count must be zero, each result a check."""
    found = {}

    settings = acceptance.profile.settings

    def measure():
        level = settings.dcgm_diag_level
        longest = dcgm_diag.LEVEL_TIMEOUT_S.get(level, 0)
        if acceptance.world.is_distributed and longest > settings.collective_timeout_s:
            # The node's other ranks wait for its outcome within the run's deadline; a diagnostic
            # longer than that would break the world, not the GPU.
            raise NotMeasured(f"dcgmi diag -r {level} can take up to {longest} s, longer than [settings] "
                              f"collective_timeout_s = {settings.collective_timeout_s:g} s that the other ranks "
                              f"wait for it: raise collective_timeout_s to {longest} or run level 1")
        report = dcgm_diag.run_dcgm_diag(level)
        found["report"] = report.to_json()
        return dcgm_diag.failures(report, acceptance.location("node"))

    acceptance.measure(dcgm_diag.METRIC, measure, compare_peers=False)
    shared = {"host": acceptance.world.host, "report": found["report"]} if "report" in found else None
    acceptance.share(shared, lambda by_rank: [check for node in by_rank.values() if node
                                              for check in dcgm_result_checks(node["host"], node["report"])])
