"""The burn-in's silent-data-corruption rules: every device's results against its own and against its peers'.

On rank 0, over every rank's `burnin.mismatches` figures (probes/burnin.py):

- a device whose own checks found a wrong result (a repeat that differs from its first result, a
  first result beyond the fp64 checksum's bound) fails, named, with what went wrong;
- each device's first result of each product, by SHA-256, against the other devices that can be
  compared with it bit for bit: the same model, SM count and libraries (`comparable_as`; cuBLAS is
  reproducible only there). The digest most of them hold is the right one; where they split evenly,
  the one digest whose devices all passed the checksum; where even that cannot tell, every device of
  the split fails, for none can be trusted.

Whatever the profile says: a wrong result is never within tolerance.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from clusterbench.judge.rules import rule_check
from clusterbench.model import Better, Check, Location, Measurement, Provenance, Verdict

MISMATCHES = "burnin.mismatches"
GPU_ACTION = "drain the node, run dcgmi diag -r 3 on that GPU; RMA it if the mismatch repeats"
CPU_ACTION = "run a CPU and memory stress test on that host (stress-ng --matrix, memtester); replace it if it repeats"
OWN_SOURCE = "a device must compute the same product bit for bit every time, within rounding of fp64 (gpu-burn)"
PEER_SOURCE = "devices of one model and software compute the same product bit for bit (cuBLAS reproducibility)"


@dataclass(frozen=True)
class DeviceResults:
    """One device's figure and its products' digests (operands and first result), by product index."""

    measurement: Measurement
    digests: dict[int, tuple[str, str]]  # index -> (inputs_sha256, result_sha256)
    trusted: dict[int, bool]  # index -> its own checks passed for that product

    @classmethod
    def of(cls, m: Measurement) -> DeviceResults:
        products = m.details.get("products", [])
        return cls(m, {p["index"]: (p["inputs_sha256"], p["result_sha256"]) for p in products},
                   {p["index"]: not p["beyond_checksum"] and not p["mismatched_results"] for p in products})


def burnin_checks(measurements: list[Measurement]) -> list[Check]:
    """Every rule above over every rank's burn-in figures; the throughput figures are left alone."""
    figures = [DeviceResults.of(m) for m in measurements if m.metric == MISMATCHES]
    checks = [_own_check(d) for d in figures]
    groups: dict[tuple[str, str, str], list[DeviceResults]] = defaultdict(list)
    for d in figures:
        details = d.measurement.details
        groups[(details.get("comparable_as", ""), details.get("dtype", ""), str(details.get("shape")))].append(d)
    for group in groups.values():
        if len(group) > 1:
            checks += _peer_checks(group)
    return checks


def _own_check(d: DeviceResults) -> Check:
    """The device's own checks (repeats against its first results, the fp64 bound): must be 0."""
    m = d.measurement
    if m.value == 0:
        products = len(m.details.get("products", []))
        return rule_check(m, Verdict.PASS, source=OWN_SOURCE,
                          message=f"{_where(m.location)}: every repeat of its {products} products bit-identical to "
                                  f"the first result, every first result within the fp64 checksum's bound")
    wrong = []
    for p in m.details.get("products", []):
        if p["mismatched_results"]:
            wrong.append(f"product {p['index']}: {p['mismatched_results']} of its repeats differ from its first "
                         f"result ({p['mismatched_elements']} elements, first in round {p['first_mismatch_round']})")
        if p["beyond_checksum"]:
            wrong.append(f"product {p['index']}: its result is {p['checksum_ratio']:.3g} x beyond the fp64 "
                         "checksum's rounding bound")
    message = (f"{_where(m.location)} computed wrong results in the {m.details.get('soak_seconds', 0):.0f} s "
               f"burn-in: {'; '.join(wrong)}: silent data corruption; what to do: {_action(m.location)}")
    return rule_check(m, Verdict.FAIL, source=OWN_SOURCE, message=message)


def _peer_checks(group: list[DeviceResults]) -> list[Check]:
    indices = sorted({i for d in group for i in d.digests})
    # position in group -> what is wrong with it -> the products it is wrong on
    wrong: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for index in indices:
        holders = [d.digests.get(index) for d in group]
        reference, how = _reference(holders, [d.trusted.get(index, False) for d in group])
        for position, digest in enumerate(holders):
            if reference is None:
                what = f"the {len(group)} devices split {_split(holders)} and no result passed the checksum alone"
            elif digest is None:
                what = "no result"
            elif digest != reference:
                differs = "its operands differ (host memory or software)" if digest[0] != reference[0] \
                    else "its result differs bit for bit"
                what = f"{differs} from {how}"
            else:
                continue
            wrong[position][what].append(index)
    model = group[0].measurement.details.get("device_name", "device")
    checks = []
    for position, d in enumerate(group):
        m = d.measurement
        if wrong[position]:
            said = "; ".join(f"product{'s' if len(ix) > 1 else ''} {', '.join(map(str, ix))}: {what}"
                             for what, ix in wrong[position].items())
            message = (f"{_where(m.location)} disagrees with its {len(group) - 1} peer(s) ({model}): {said}: "
                       f"silent data corruption; what to do: {_action(m.location)}")
            products = float(sum(len(ix) for ix in wrong[position].values()))
            checks.append(_peer_check(m, Verdict.FAIL, products, message))
        else:
            message = (f"{_where(m.location)}: the results of {len(indices)} products match bit for bit those of "
                       f"{len(group) - 1} other {model} device(s)")
            checks.append(_peer_check(m, Verdict.PASS, 0.0, message))
    return checks


def _reference(holders: list[tuple[str, str] | None], trusted: list[bool]) -> tuple[tuple[str, str] | None, str]:
    """The right digest of one product among a group's, and how it was chosen; None if none can be."""
    counts = Counter(h for h in holders if h is not None)
    if counts:
        digest, held = counts.most_common(1)[0]
        if held * 2 > len(holders):
            return digest, f"the {held} of {len(holders)} devices that agree"
    passed = {h for h, ok in zip(holders, trusted) if ok and h is not None}
    failed = {h for h, ok in zip(holders, trusted) if not ok}
    if len(passed) == 1 and not passed & failed:
        (digest,) = passed
        return digest, "the devices whose result passed the fp64 checksum (no majority)"
    return None, ""


def _split(holders: list[tuple[str, str] | None]) -> str:
    return "/".join(str(n) for _, n in Counter(holders).most_common())


def _where(location: Location | None) -> str:
    if location is None:
        return "a device"
    return f"host {location.host} device {location.device} (rank {location.rank})"


def _action(location: Location | None) -> str:
    return GPU_ACTION if location is not None and location.device.startswith("cuda") else CPU_ACTION


def _peer_check(m: Measurement, verdict: Verdict, observed: float, message: str) -> Check:
    return Check(metric=m.metric, params=dict(m.params), verdict=verdict, observed=observed, target=0.0,
                 unit=m.unit, provenance=Provenance.PEERS.value, source=PEER_SOURCE, message=message,
                 better=Better.LOWER, location=m.location)
