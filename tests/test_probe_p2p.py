"""The GPU-to-GPU copy matrix: the probe on a fake 8-GPU node (tests/fake_p2p.py), the judge's slow
pair, suspect GPU and PCIe-instead-of-NVLink rules, the link reader over a fake NVML, the report's
matrices, and NOT MEASURED on this CPU machine, end to end through the real suite."""

from __future__ import annotations

import statistics

import pytest

from clusterbench.judge import copy_matrix_checks
from clusterbench.model import NotMeasured, Provenance, Verdict
from clusterbench.probes import p2p
from clusterbench.probes.p2p_links import read_pair_links
from clusterbench.reports.copy_matrix import copy_matrix_plots, render_copy_matrices
from clusterbench.reports.render import render_reports
from clusterbench.results import RunResults
from fake_gpu_node import FakeGpuNode
from fake_p2p import HOST, FakeCopyNode, FakeP2pNvml, cuda_uuid
from history_results import run_info
from test_acceptance_run import run_suite

PLAN = p2p.CopyPlan(buffer_bytes=1 << 20, copies=8, samples=3, warmup_copies=2)
TOLERANCE = 0.05


def matrix(node: FakeCopyNode, *, known_links: bool = True) -> list:
    return p2p.measure_copy_matrix(node.devices(), timer=node, links=node.links(known_links), plan=PLAN,
                                   location=node.location())


def figure(measurements, src, dst, direction="unidirectional"):
    (found,) = [m for m in measurements if (m.params["src"], m.params["dst"], m.params["direction"]) ==
                (src, dst, direction)]
    return found


def failed(checks):
    return [c for c in checks if c.verdict is Verdict.FAIL]


# --- the probe ---------------------------------------------------------------------------------------


def test_every_ordered_pair_both_ways_in_decimal_gbps_with_samples_kept():
    node = FakeCopyNode()
    measured = matrix(node)
    assert len(measured) == 2 * 8 * 7  # 56 ordered pairs, one way and both ways
    assert all(m.metric == "p2p.copy_gbps" and m.unit == "GB/s" and m.location.host == HOST for m in measured)
    one_way = figure(measured, 3, 5)
    assert len(one_way.samples) == PLAN.samples and one_way.value == statistics.median(one_way.samples)
    # bytes x copies / seconds / 1e9: the fake's 390 GB/s link reads 390, not 390 / 1.074 (GiB)
    assert one_way.value == pytest.approx(390.0, rel=0.002)
    both = figure(measured, 3, 5, "bidirectional")
    assert both.value == pytest.approx(780.0, rel=0.002)  # both directions at once, summed
    assert both.samples == pytest.approx([f + r for f, r in zip(both.details["forward_gbps"],
                                                                  both.details["reverse_gbps"])])
    assert one_way.details["path"] == "nvlink" and one_way.details["src_uuid"] == cuda_uuid(3)
    assert one_way.details["buffer_bytes"] == PLAN.buffer_bytes and one_way.details["copies_per_sample"] == 8


def test_each_pair_is_warmed_up_before_its_timed_samples():
    node = FakeCopyNode(gpus=3)
    matrix(node)
    for kind in ("one_way", "both_ways"):
        calls = [c for c in node.calls if c[0] == kind and c[1:3] == (0, 2)]
        assert [c[3] for c in calls] == [PLAN.warmup_copies] + [PLAN.copies] * PLAN.samples


def test_a_cpu_machine_is_not_measured_with_the_reason(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(NotMeasured, match=r"^the copy matrix needs at least 2 GPUs on a node; this node has 0$"):
        p2p.measure_node(quick=True, location=FakeCopyNode().location())


def test_a_first_rank_that_sees_one_gpu_says_cuda_visible_devices_hides_the_others(monkeypatch):
    FakeGpuNode(gpus=8, visible=(2,)).install(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    with pytest.raises(NotMeasured) as caught:
        p2p.measure_node(quick=True, location=FakeCopyNode().location())
    reason = str(caught.value)
    assert reason.startswith("the copy matrix needs at least 2 GPUs on a node; this node's first local rank sees 1")
    assert "CUDA_VISIBLE_DEVICES='2' hides the others; NVML counts 8 on this node" in reason


# --- the link reader ------------------------------------------------------------------------------------


def test_links_pair_cuda_and_nvml_gpus_by_uuid(monkeypatch):
    import torch

    node = FakeCopyNode(pcie_only=frozenset({6}))
    monkeypatch.setattr(torch.cuda, "can_device_access_peer", lambda a, b: True)
    links = read_pair_links({i: cuda_uuid(i) for i in range(8)}, FakeP2pNvml(node))
    assert links[(0, 1)].path == "nvlink" and links[(1, 6)].path == "pcie" and links[(6, 0)].path == "pcie"
    # NVML indices run backwards here: cuda:0 is NVML 7, cuda:7 is NVML 0 (SYS), cuda:3 NVML 4 (NODE)
    assert links[(0, 7)].pcie_topology == "SYS" and links[(0, 3)].pcie_topology == "NODE"


def test_links_without_nvml_are_unknown_and_say_why(monkeypatch):
    import torch

    node = FakeCopyNode(gpus=2)
    monkeypatch.setattr(torch.cuda, "can_device_access_peer", lambda a, b: False)
    links = read_pair_links({0: cuda_uuid(0), 1: cuda_uuid(1)}, FakeP2pNvml(node, init_error=9))
    assert links[(0, 1)].path == "host"  # no peer access: staged through host memory, NVML or not
    assert links[(0, 1)].nvlink is None and links[(0, 1)].unknown_reason.startswith("NVML unavailable")


# --- the judge ------------------------------------------------------------------------------------------


def test_a_healthy_node_passes_once_per_direction():
    checks = copy_matrix_checks(matrix(FakeCopyNode()), TOLERANCE)
    assert [(c.verdict, c.params) for c in checks] == [
        (Verdict.PASS, {"direction": "bidirectional"}), (Verdict.PASS, {"direction": "unidirectional"})]
    assert "all 56 unidirectional GPU pairs within 5%" in checks[1].message


def test_one_slow_link_names_the_pair_and_blames_neither_gpu():
    checks = copy_matrix_checks(matrix(FakeCopyNode(slow_links={frozenset({3, 5}): 200.0})), TOLERANCE)
    bad = failed(checks)
    assert {(c.params["src"], c.params["dst"], c.params["direction"]) for c in bad} == {
        (3, 5, "unidirectional"), (5, 3, "unidirectional"), (3, 5, "bidirectional"), (5, 3, "bidirectional")}
    first = next(c for c in bad if c.params == {"src": 3, "dst": 5, "direction": "unidirectional"})
    assert first.location.host == HOST and first.location.device == "cuda:3->cuda:5"
    assert first.provenance == Provenance.PEERS.value and first.observed == pytest.approx(200, rel=0.01)
    assert "suspect the link between them" in first.message and "what to do: run nvidia-smi nvlink -s" in first.message


def test_a_pcie_only_gpu_is_the_suspect_and_named_for_pcie_instead_of_nvlink():
    node = FakeCopyNode(pcie_only=frozenset({6}), slow_links={frozenset({1, 2}): 250.0})
    bad = failed(copy_matrix_checks(matrix(node), TOLERANCE))
    suspects = [c for c in bad if c.params == {"gpu": "cuda:6"}]
    assert {c.provenance for c in suspects} == {Provenance.PEERS.value, Provenance.RULE.value}
    peers, rule = sorted(suspects, key=lambda c: c.provenance)
    assert "GPU cuda:6 (GPU-" + cuda_uuid(6) + ") is common to 28 slow pairs with 7 partners" in peers.message
    assert "reaches 7 of its 7 peers over PCIe instead of NVLink" in rule.message
    assert "NVML reports no NVLink" in rule.message and "H200 SXM" in rule.source
    assert rule.location.device == "cuda:6" and "nvidia-smi nvlink -s -i GPU-" in rule.message
    # The slow 1<->2 link is named as a link; neither 1, 2 nor 6's partners are suspects.
    assert not [c for c in bad if c.params.get("gpu") not in (None, "cuda:6")]
    link = next(c for c in bad if c.params == {"src": 1, "dst": 2, "direction": "unidirectional"})
    assert "suspect the link between them" in link.message
    via_six = next(c for c in bad if c.params == {"src": 0, "dst": 6, "direction": "unidirectional"})
    assert "cuda:6 is slow with 7 partners: suspect that GPU" in via_six.message


def test_without_nvml_a_pair_no_faster_than_pcie_reads_as_pcie():
    node = FakeCopyNode(pcie_only=frozenset({6}))
    rule = [c for c in failed(copy_matrix_checks(matrix(node, known_links=False), TOLERANCE))
            if c.provenance == Provenance.RULE.value]
    assert [c.params for c in rule] == [{"gpu": "cuda:6"}]
    assert "no faster than PCIe x16 one way (63.0 GB/s, the table's host_gbps)" in rule[0].message


def test_a_node_with_every_pair_over_pcie_is_named_once():
    node = FakeCopyNode(gpus=4, pcie_only=frozenset(range(4)))
    bad = failed(copy_matrix_checks(matrix(node), TOLERANCE))
    assert len(bad) == 1 and bad[0].location.device == "node"
    assert "every pair of its 4 H200 SXM GPUs goes over PCIe instead of NVLink" in bad[0].message
    assert "nvidia-fabricmanager" in bad[0].message


def test_bridged_pcie_cards_and_unknown_gpus_promise_no_nvlink():
    for name in ("NVIDIA H100 PCIe", "NVIDIA RTX 6000 Ada Generation"):
        node = FakeCopyNode(gpus=4, pcie_only=frozenset(range(4)), name=name)
        assert not failed(copy_matrix_checks(matrix(node), TOLERANCE)), name


def test_two_gpus_are_too_few_to_name_a_slow_pair():
    node = FakeCopyNode(gpus=2, slow_links={frozenset({0, 1}): 100.0})
    assert copy_matrix_checks(matrix(node), TOLERANCE) == []


def test_each_node_is_judged_among_its_own_pairs():
    fast = matrix(FakeCopyNode(gpus=4))
    slow = matrix(FakeCopyNode(gpus=4, nvlink_gbps=200.0))  # another kind of node: not a slow node here
    for m in slow:
        m.location = type(m.location)("gpu-node-08", 8, "node")
    checks = copy_matrix_checks(fast + slow, TOLERANCE)
    assert not failed(checks) and {c.location.host for c in checks} == {HOST, "gpu-node-08"}


# --- the reports ----------------------------------------------------------------------------------------


def test_the_terminal_matrix_reads_as_nvbandwidth_prints_it():
    text = render_copy_matrices(matrix(FakeCopyNode(gpus=3)))
    lines = text.splitlines()
    assert lines[0] == f"# {HOST}: memcpy CE GPU(row) -> GPU(column) bandwidth (GB/s)"
    assert lines[1].split() == ["0", "1", "2"]
    assert lines[2].split()[:2] == ["0", "-"] and float(lines[2].split()[2]) == pytest.approx(390, rel=0.01)
    assert "<-> GPU(column) bandwidth (GB/s), both directions summed" in text


def test_the_plot_outlines_the_pairs_the_judge_failed():
    measured = matrix(FakeCopyNode(slow_links={frozenset({3, 5}): 200.0}))
    (plot,) = copy_matrix_plots(measured, copy_matrix_checks(measured, TOLERANCE))
    assert plot.svg.startswith("<svg") and "cuda:7" in plot.svg
    assert plot.caption.startswith("outlined: the 4 pairs the judge failed")
    assert plot.svg.count("stroke: #c62828") == 4  # one red outline per failed pair


def test_the_html_report_draws_the_matrix_in_the_memory_section(tmp_path):
    measured = matrix(FakeCopyNode(pcie_only=frozenset({6})))
    results = RunResults(run=run_info("2026-12-01T12:00:00+00:00"), measurements=measured,
                         checks=copy_matrix_checks(measured, TOLERANCE))
    render_reports(results, tmp_path, None)
    html = (tmp_path / "report.html").read_text()
    assert f"p2p.copy_gbps on {HOST}: source GPU per row; destination per column" in html
    assert "p2p.copy_gbps[direction=unidirectional,dst=" not in html  # no per-pair bar plots


# --- end to end -------------------------------------------------------------------------------------------


def test_the_suite_on_this_cpu_machine_says_not_measured(tmp_path):
    run = run_suite(tmp_path, "--cluster=local", "-m", "memory", "-k", "p2p")
    assert run.returncode == 0, run.stdout + run.stderr
    (test,) = [t for t in run.results["tests"] if "test_p2p_copy_matrix" in t["nodeid"]]
    assert test["outcome"] == "skipped" and test["verdict"] == "NOT MEASURED"
    assert "the copy matrix needs at least 2 GPUs on a node; this node has 0" in test["message"]
