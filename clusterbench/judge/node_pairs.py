"""The pairwise node test: which node (or which link) is slow, without blaming its partner.

First pass: nodes are paired off and each pair's send/recv bandwidth measured. A pair that the
judge's peer-outlier rule (clusterbench.judge.peers) names among all pairs is suspect, but either
end (or the path between them) may be at fault. Second pass: each node of a suspect pair is
re-paired with nodes from good pairs. A node that is slow again is to blame; a node that is fast
with a good partner is cleared; when both ends are cleared the link between them is named. This
is the cluster-health-scanner's second pass, in plain data.
"""

from __future__ import annotations

from dataclasses import dataclass

from clusterbench.judge.peers import PeerYardstick
from clusterbench.model import Better
from clusterbench.runners.groups import Pair


@dataclass(frozen=True)
class PairResult:
    pair: Pair
    busbw_gbps: float
    round: int  # 1 for the first pass, 2 for the re-pairing


@dataclass(frozen=True)
class Blame:
    """The verdict on one node or one link."""

    subject: str  # a node's host name, or "a<->b" for a link
    is_link: bool
    slow: bool
    message: str


def slow_pairs(results: list[PairResult], tolerance: float) -> list[PairResult]:
    """The first-pass pairs the peer-outlier rule names among all first-pass pairs."""
    yardstick = _yardstick(results, tolerance)
    if yardstick is None:
        return []  # too few pairs to tell which is slow
    return [r for r in results if yardstick.standing(r.busbw_gbps).outlier]


def _yardstick(first: list[PairResult], tolerance: float) -> PeerYardstick | None:
    # Two first-pass pairs are enough (three nodes): a slow pair is only a suspect here, and the
    # second pass, each end re-paired with a node of a good pair, decides which end is slow.
    return PeerYardstick.of([r.busbw_gbps for r in first], tolerance, Better.HIGHER, min_locations=2)


def second_pass_pairs(first: list[PairResult], tolerance: float) -> list[Pair]:
    """Each node of a slow pair, re-paired with a node from a good pair (round robin)."""
    slow = slow_pairs(first, tolerance)
    suspects = list(dict.fromkeys(node for r in slow for node in r.pair))
    good = [node for r in first if r not in slow for node in r.pair if node not in suspects]
    good = list(dict.fromkeys(good))
    if not good:
        return []
    return [(suspect, good[i % len(good)]) for i, suspect in enumerate(suspects)]


def blame(first: list[PairResult], second: list[PairResult], tolerance: float) -> list[Blame]:
    """Name the slow nodes and links from both passes."""
    yardstick = _yardstick(first, tolerance)
    if yardstick is None:
        return []
    median = yardstick.median
    floor = median * (1 - tolerance)

    def is_slow(busbw_gbps: float) -> bool:  # a re-paired node, placed among the first-pass pairs
        return yardstick.standing(busbw_gbps).outlier

    slow = slow_pairs(first, tolerance)
    retest = {r.pair[0]: r for r in second}  # the suspect is always first in a second-pass pair
    blames: list[Blame] = []
    suspects = {node for r in slow for node in r.pair}
    for result in slow:
        a, b = result.pair
        verdicts = {}
        for node in (a, b):
            again = retest.get(node)
            verdicts[node] = None if again is None else is_slow(again.busbw_gbps)
        if all(v is None for v in verdicts.values()):
            blames.append(Blame(f"{a}<->{b}", True, True,
                                f"pair {a}<->{b} at {result.busbw_gbps:.3g} GB/s is below {floor:.3g} GB/s "
                                f"({tolerance:.0%} under the median {median:.3g} of all pairs), and no good node "
                                "was left to re-pair with: the slow end cannot be told apart"))
            continue
        if not any(verdicts.values()):
            blames.append(Blame(f"{a}<->{b}", True, True,
                                f"link {a}<->{b} at {result.busbw_gbps:.3g} GB/s is slow while both ends are fast "
                                f"with other partners: suspect the path between them (cable, switch port)"))
    for node in sorted(suspects):
        again = retest.get(node)
        if again is None:
            continue
        partner = again.pair[1]
        slow_again = is_slow(again.busbw_gbps)
        message = (
            f"node {node} is slow: {again.busbw_gbps:.3g} GB/s again with good partner {partner}, below "
            f"{floor:.3g} GB/s ({tolerance:.0%} under the median {median:.3g} of all pairs)"
            if slow_again
            else f"node {node} cleared: {again.busbw_gbps:.3g} GB/s with good partner {partner}"
        )
        blames.append(Blame(node, False, slow_again, message))
    return blames
