"""Checks of the pairwise node test: one per node or link the two passes blamed or cleared."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clusterbench.model import Check, Location, Provenance, Verdict

if TYPE_CHECKING:  # clusterbench.judge.node_pairs asks this package's peer rule which pairs are slow
    from clusterbench.judge.node_pairs import Blame


def pairwise_check(blame: Blame, tolerance: float) -> Check:
    return Check(
        metric="pairwise.busbw_gbps",
        params={},
        verdict=Verdict.FAIL if blame.slow else Verdict.PASS,
        observed=None,
        target=None,
        unit="GB/s",
        provenance=Provenance.PEERS.value,
        source=f"median of all node pairs, outlier_tolerance {tolerance:.0%}; second pass re-pairs suspects",
        message=blame.message,
        location=Location(host=blame.subject, rank=-1, device="link" if blame.is_link else "node"),
    )
