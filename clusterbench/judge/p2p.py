"""Checks of a node's GPU-to-GPU copy matrix (p2p.copy_gbps): the slow pairs, the GPU they share,
and GPUs that talk over PCIe where the hardware has NVLink.

Three rules, each over one node's matrix (a node's pairs are each other's peers; another node's
pairs are not, its GPUs may be of another kind):

- slow pair: a pair the judge's one peer rule (judge.peers) names among all the node's ordered
  pairs of the same direction. No profile figure is needed: on eight identical GPUs joined by one
  NVSwitch fabric, all 56 pairs should read alike.
- suspect GPU: a GPU in slow pairs with at least two different partners. One bad link (3<->5)
  slows 3->5 and 5->3 alike and names neither end; a bad GPU slows its pairs with every partner.
  Partners are counted, not pairs, so that the two directions of one link do not blame its ends.
- PCIe instead of NVLink: the hardware table (clusterbench.hardware) gives the GPU a scale-up link
  that joins every GPU of a node, yet NVML reports no NVLink between a pair, CUDA gives it no peer
  access (copies staged through host memory), or, where neither can say, the pair copies no faster
  than PCIe x16 carries one way. A GPU with two or more such partners is named, and a node where
  every pair is over PCIe is named as a whole (Fabric Manager, NVLink disabled).

Every check names the host, the pair or GPU, and what to do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from clusterbench.hardware import AcceleratorSpec, HardwareTableError, match_accelerator
from clusterbench.judge.formatting import format_value
from clusterbench.judge.peers import PeerStanding, PeerYardstick
from clusterbench.model import Better, Check, Location, Measurement, Provenance, Verdict

METRIC = "p2p.copy_gbps"
# Entries whose scale-up link joins only the two cards of a bridged pair: their other pairs rightly
# talk over PCIe, so the table's link is no promise for the whole node.
BRIDGED_PAIRS_ONLY = frozenset({"h100_pcie"})
MIN_PARTNERS = 2  # a GPU in slow (or PCIe) pairs with this many partners is the suspect

_SLOW_LINK_ACTION = (
    "run nvidia-smi nvlink -s and nvidia-smi nvlink -e on both GPUs (a link down or counting errors), "
    "then dcgmi diag -r 2; if both GPUs are fast with every other peer, suspect the NVLink path between "
    "them (NVSwitch port, baseboard): reset the GPUs, then RMA the baseboard if it stays slow"
)
_SUSPECT_ACTION = (
    "drain the node; nvidia-smi nvlink -s -i {uuid} shows which of its links are down or slow, "
    "nvidia-smi nvlink -e -i {uuid} their error counters; reset the GPU (nvidia-smi -r), then run dcgmi "
    "diag -r 2 and reseat or RMA the GPU if it stays slow"
)
_PCIE_GPU_ACTION = (
    "drain the node; nvidia-smi nvlink -s -i {uuid} shows its links (inactive ones), nvidia-smi topo -m "
    "the path to each peer; reset the GPU or reboot, then reseat or RMA the GPU or baseboard if NVLink stays down"
)
_PCIE_NODE_ACTION = (
    "on an NVSwitch system check that nvidia-fabricmanager is running (systemctl status nvidia-fabricmanager; "
    "nvidia-smi -q shows the fabric state), then nvidia-smi nvlink -s and nvidia-smi topo -m; reboot the node "
    "if the fabric does not come up"
)


@dataclass(frozen=True)
class SlowPair:
    measurement: Measurement
    standing: PeerStanding
    peers: int  # the node's pairs of this direction it was placed among

    @property
    def pair(self) -> tuple[int, int]:
        return int(self.measurement.params["src"]), int(self.measurement.params["dst"])


def copy_matrix_checks(measurements: list[Measurement], tolerance: float,
                       table: dict[str, AcceleratorSpec] | None = None) -> list[Check]:
    """Every node's matrix judged by the three rules above; the figures of other metrics are ignored."""
    by_host: dict[str, list[Measurement]] = {}
    for m in measurements:
        if m.metric == METRIC:
            by_host.setdefault(m.location.host, []).append(m)
    checks: list[Check] = []
    for host in sorted(by_host):
        checks += node_checks(by_host[host], tolerance, table)
    return checks


def node_checks(measurements: list[Measurement], tolerance: float,
                table: dict[str, AcceleratorSpec] | None = None) -> list[Check]:
    """The checks of one node's matrix."""
    checks: list[Check] = []
    slow: list[SlowPair] = []
    for direction in sorted({str(m.params["direction"]) for m in measurements}):
        group = [m for m in measurements if m.params["direction"] == direction]
        found, yardstick = slow_pairs(group, tolerance)
        slow += found
        if yardstick is not None and not found:
            checks.append(_matrix_passes(group, yardstick, direction))
    suspects = common_gpus(s.pair for s in slow)
    checks += [_slow_pair_check(s, suspects, tolerance) for s in slow]
    checks += [_suspect_check(gpu, partners, slow, tolerance) for gpu, partners in sorted(suspects.items())]
    checks += pcie_checks(measurements, table)
    return checks


def slow_pairs(group: list[Measurement], tolerance: float) -> tuple[list[SlowPair], PeerYardstick | None]:
    """The pairs of one node and direction the peer rule names, and the yardstick they were placed on."""
    yardstick = PeerYardstick.of([m.value for m in group], tolerance, Better.HIGHER)
    if yardstick is None:
        return [], None  # two GPUs, two ordered pairs: no telling which one is odd
    standings = [(m, yardstick.standing(m.value)) for m in group]
    return [SlowPair(m, s, len(group)) for m, s in standings if s.outlier], yardstick


def common_gpus(pairs: Iterable[tuple[int, int]]) -> dict[int, set[int]]:
    """The GPUs in pairs with at least MIN_PARTNERS different partners, with those partners.

    The GPU with the most partners is named first and its pairs are set aside before the next is
    looked for: a bad GPU 6 makes every other GPU slow with partner 6, and a slow 1<->2 link beside
    it must not make 1 and 2 suspects too (partners {2, 6} and {1, 6})."""
    unexplained = {frozenset(pair) for pair in pairs if pair[0] != pair[1]}
    named: dict[int, set[int]] = {}
    while unexplained:
        partners: dict[int, set[int]] = {}
        for pair in unexplained:
            a, b = sorted(pair)
            partners.setdefault(a, set()).add(b)
            partners.setdefault(b, set()).add(a)
        gpu, mates = max(partners.items(), key=lambda item: (len(item[1]), -item[0]))
        if len(mates) < MIN_PARTNERS:
            break
        named[gpu] = mates
        unexplained = {pair for pair in unexplained if gpu not in pair}
    return named


def _where(m: Measurement, device: str) -> Location:
    return Location(host=m.location.host, rank=m.location.rank, device=device)


def _pair_label(m: Measurement) -> str:
    arrow = "<->" if m.params["direction"] == "bidirectional" else "->"
    return f"cuda:{m.params['src']}{arrow}cuda:{m.params['dst']}"


def _peer_source(tolerance: float, pairs: int) -> str:
    return (f"median of the node's {pairs} ordered GPU pairs, outlier_tolerance {tolerance:.0%} "
            "and a robust z-score (judge.peers)")


def _matrix_passes(group: list[Measurement], yardstick: PeerYardstick, direction: str) -> Check:
    first = group[0]
    low = min(group, key=lambda m: m.value)
    return Check(
        metric=METRIC, params={"direction": direction}, verdict=Verdict.PASS, observed=low.value,
        target=yardstick.median, unit=first.unit, provenance=Provenance.PEERS.value,
        source=_peer_source(yardstick.tolerance, yardstick.locations),
        message=(f"{first.location.host}: all {len(group)} {direction} GPU pairs within "
                 f"{yardstick.tolerance:.0%} of their median {format_value(yardstick.median, first.unit)} "
                 f"(slowest {_pair_label(low)} at {format_value(low.value, low.unit)})"),
        location=_where(first, "node"),
    )


def _slow_pair_check(slow: SlowPair, suspects: dict[int, set[int]], tolerance: float) -> Check:
    m, standing = slow.measurement, slow.standing
    z = f", robust z {standing.robust_z:.1f}" if standing.robust_z is not None else ""
    shared = [gpu for gpu in slow.pair if gpu in suspects]
    blame = (f"cuda:{shared[0]} is slow with {len(suspects[shared[0]])} partners: suspect that GPU"
             if shared else "both GPUs are fast with their other peers: suspect the link between them")
    return Check(
        metric=METRIC, params=dict(m.params), verdict=Verdict.FAIL, observed=m.value, target=standing.median,
        unit=m.unit, provenance=Provenance.PEERS.value,
        source=_peer_source(tolerance, slow.peers),
        message=(f"{m.location.host}: {m.params['direction']} copy {_pair_label(m)} at "
                 f"{format_value(m.value, m.unit)} is {standing.shortfall:.1%} behind the median "
                 f"{format_value(standing.median, m.unit)} of the node's pairs{z}; {blame}; what to do: "
                 + (_SUSPECT_ACTION.format(uuid=_uuid(m, shared[0])) if shared else _SLOW_LINK_ACTION)),
        location=_where(m, _pair_label(m)),
    )


def _suspect_check(gpu: int, partners: set[int], slow: list[SlowPair], tolerance: float) -> Check:
    mine = [s for s in slow if gpu in s.pair]
    worst = min(mine, key=lambda s: s.measurement.value)
    m = worst.measurement
    return Check(
        metric=METRIC, params={"gpu": f"cuda:{gpu}"}, verdict=Verdict.FAIL, observed=m.value,
        target=worst.standing.median, unit=m.unit, provenance=Provenance.PEERS.value,
        source=f"GPU common to slow pairs with {MIN_PARTNERS} or more partners; outlier_tolerance {tolerance:.0%}",
        message=(f"{m.location.host}: GPU cuda:{gpu} ({_uuid(m, gpu)}) is common to {len(mine)} slow pairs with "
                 f"{len(partners)} partners ({', '.join(f'cuda:{p}' for p in sorted(partners))}), worst "
                 f"{_pair_label(m)} at {format_value(m.value, m.unit)} against the median "
                 f"{format_value(worst.standing.median, m.unit)}; what to do: "
                 + _SUSPECT_ACTION.format(uuid=_uuid(m, gpu))),
        location=_where(m, f"cuda:{gpu}"),
    )


def _uuid(m: Measurement, gpu: int) -> str:
    """The GPU's UUID as nvidia-smi -i takes it ("GPU-..."), or its CUDA index where torch gave none."""
    side = "src" if int(m.params["src"]) == gpu else "dst"
    uuid = m.details.get(f"{side}_uuid")
    return f"GPU-{uuid}" if uuid and not str(uuid).startswith(("GPU-", "MIG-")) else str(uuid or f"cuda:{gpu}")


# -- PCIe where the table says NVLink ----------------------------------------------------------


def scaleup_promised(device_name: str, table: dict[str, AcceleratorSpec] | None = None) -> AcceleratorSpec | None:
    """The table's entry for `device_name` when it promises a scale-up link between every GPU pair."""
    try:
        spec = match_accelerator(device_name, table)
    except HardwareTableError:
        return None  # an ambiguous table is reported where the profile is read, not in each matrix
    if spec is None or spec.scaleup_link_gbps is None or spec.key in BRIDGED_PAIRS_ONLY:
        return None
    return spec


def _link_name(spec: AcceleratorSpec) -> str:
    figure = spec.scaleup_link_gbps
    return "xGMI" if figure is not None and "xGMI" in figure.note else "NVLink"


def _over_pcie(m: Measurement, spec: AcceleratorSpec) -> str | None:
    """Why this copy went over PCIe (one phrase), or None when nothing says it did."""
    path = m.details.get("path")
    if path == "host":
        return "CUDA gives no peer access, so copies are staged through host memory"
    if path == "pcie":
        return f"NVML reports no {_link_name(spec)} between them"
    ceiling = spec.host_link_gbps
    if path != "nvlink" and ceiling is not None and m.value <= ceiling.value:
        return (f"it copies at {format_value(m.value, m.unit)}, no faster than PCIe x16 one way "
                f"({format_value(ceiling.value, 'GB/s')}, the table's host_gbps)")
    return None


def pcie_checks(measurements: list[Measurement], table: dict[str, AcceleratorSpec] | None = None) -> list[Check]:
    """One node's pairs that go over PCIe although its GPUs' table entry gives them a scale-up link."""
    one_way = [m for m in measurements if m.params["direction"] == "unidirectional"]
    if not one_way:
        return []
    spec = scaleup_promised(str(one_way[0].details.get("src_name", "")), table)
    if spec is None:
        return []
    found = {(int(m.params["src"]), int(m.params["dst"])): (m, why) for m in one_way
             for why in [_over_pcie(m, spec)] if why is not None}
    if not found:
        return []
    if len(found) == len(one_way):
        return [_pcie_node_check(one_way, spec, found)]
    gpus = common_gpus(found)
    checks = [_pcie_gpu_check(gpu, partners, found, spec) for gpu, partners in sorted(gpus.items())]
    checks += [_pcie_pair_check(m, why, spec) for (a, b), (m, why) in sorted(found.items())
               if a not in gpus and b not in gpus]
    return checks


def _rule_source(spec: AcceleratorSpec) -> str:
    figure = spec.scaleup_link_gbps
    rate = f" ({format_value(figure.value, 'GB/s')} one way; {figure.source})" if figure is not None else ""
    return f"hardware table: {spec.name} GPUs join every peer over {_link_name(spec)}{rate}"


def _pcie_check(m: Measurement, spec: AcceleratorSpec, params: dict, device: str, message: str) -> Check:
    return Check(metric=METRIC, params=params, verdict=Verdict.FAIL, observed=m.value,
                 target=spec.scaleup_link_gbps.value if spec.scaleup_link_gbps else None, unit=m.unit,
                 provenance=Provenance.RULE.value, source=_rule_source(spec), message=message,
                 location=_where(m, device))


def _pcie_node_check(one_way: list[Measurement], spec: AcceleratorSpec, found: dict) -> Check:
    m = max(one_way, key=lambda x: x.value)
    evidence = {"host": "no CUDA peer access", "pcie": "NVML reports no " + _link_name(spec)}
    reasons = sorted({evidence.get(str(pair.details.get("path")), "no faster than PCIe x16")
                      for pair, _ in found.values()})
    gpus = len({int(x.params["src"]) for x in one_way})
    return _pcie_check(m, spec, {"direction": "unidirectional"}, "node", (
        f"{m.location.host}: every pair of its {gpus} {spec.name} GPUs goes over PCIe instead of "
        f"{_link_name(spec)} ({'; '.join(reasons)}; fastest pair {format_value(m.value, m.unit)}); what to do: "
        + _PCIE_NODE_ACTION))


def _pcie_gpu_check(gpu: int, partners: set[int], found: dict, spec: AcceleratorSpec) -> Check:
    mine = [(m, why) for (a, b), (m, why) in found.items() if gpu in (a, b)]
    m, why = min(mine, key=lambda item: item[0].value)
    peers = m.details.get("gpus_on_node")
    of = f" of its {int(peers) - 1}" if isinstance(peers, int) else ""
    return _pcie_check(m, spec, {"gpu": f"cuda:{gpu}"}, f"cuda:{gpu}", (
        f"{m.location.host}: GPU cuda:{gpu} ({_uuid(m, gpu)}) reaches {len(partners)}{of} peers over PCIe "
        f"instead of {_link_name(spec)} (e.g. {_pair_label(m)}: {why}); what to do: "
        + _PCIE_GPU_ACTION.format(uuid=_uuid(m, gpu))))


def _pcie_pair_check(m: Measurement, why: str, spec: AcceleratorSpec) -> Check:
    topology = m.details.get("pcie_topology")
    hops = f", PCIe distance {topology} (nvidia-smi topo -m)" if topology else ""
    return _pcie_check(m, spec, dict(m.params), _pair_label(m), (
        f"{m.location.host}: copy {_pair_label(m)} goes over PCIe instead of {_link_name(spec)} ({why}{hops}); "
        "what to do: " + _PCIE_GPU_ACTION.format(uuid=f"{_uuid(m, int(m.params['src']))} and "
                                                       f"{_uuid(m, int(m.params['dst']))}")))
