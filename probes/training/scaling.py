"""The arithmetic of weak scaling and of cost, on throughputs already measured.

Weak scaling keeps the batch of each rank fixed and adds ranks, so ideal throughput grows with the
rank count. Efficiency is X_N / ((N / N_base) * X_base) against the smallest group measured (one
rank, where there is one): 1.0 is perfect, 0.9 means a tenth of every added device is lost to
communication and waiting (reference/storage-and-training.md, B3).
"""

from __future__ import annotations

from dataclasses import dataclass

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class ScalePoint:
    """The throughput of one group size."""

    ranks: int
    span: str  # "single", "intra-node" or "inter-node"
    tokens_per_s: float


def scaling_efficiency(point: ScalePoint, base: ScalePoint) -> float:
    if base.tokens_per_s <= 0 or point.ranks <= 0 or base.ranks <= 0:
        raise ValueError("scaling efficiency needs positive throughputs and rank counts")
    return point.tokens_per_s / ((point.ranks / base.ranks) * base.tokens_per_s)


def cost_per_million_tokens(price_per_accelerator_hour: float, accelerators: int, tokens_per_s: float) -> float:
    """What a million tokens cost when `accelerators` devices, paid by the hour, train at `tokens_per_s`."""
    if tokens_per_s <= 0:
        raise ValueError(f"throughput must be positive, got {tokens_per_s} tokens/s")
    price_per_second = price_per_accelerator_hour * accelerators / SECONDS_PER_HOUR
    return price_per_second / tokens_per_s * 1e6


def largest_efficient_scale(efficiencies: dict[int, float], floor: float) -> int | None:
    """The most ranks whose efficiency still meets `floor`, counting only sizes below which every
    size met it too: scaling that fails at 4 ranks and recovers at 8 is noise, not a place to stop.
    None when even the smallest size measured misses the floor."""
    largest = None
    for ranks in sorted(efficiencies):
        if efficiencies[ranks] < floor:
            break
        largest = ranks
    return largest
