"""A test double for silent data corruption: a GEMM whose result has one bit flipped.

`flipping_multiply(calls=...)` stands in for probes.burnin.multiply: it multiplies for real, then
flips the sign bit of the result's largest element on the given calls (every call by default: a
device that is consistently wrong). As a pytest plugin (`-p fake_sdc`, tests/ on PYTHONPATH) it
corrupts the burn-in of the rank named by CLUSTERBENCH_FAKE_SDC_RANK only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Container

import torch

SIGN_BITS = {2: torch.int16, 4: torch.int32}


def flip_sign_of_largest(result: torch.Tensor) -> None:
    """One bit: the sign of the element of largest magnitude (a change far beyond rounding)."""
    flat = result.view(-1)
    where = int(flat.float().abs().argmax())
    bits = flat.view(SIGN_BITS[result.element_size()])
    bits[where] ^= -(1 << (8 * result.element_size() - 1))  # the top bit, as a two's-complement integer


def flipping_multiply(calls: Container[int] | None = None) -> Callable[..., torch.Tensor]:
    """torch.mm with the result corrupted on the calls numbered in `calls` (0 is the first), or on all."""
    count = 0

    def multiply(a: torch.Tensor, b: torch.Tensor, *, out: torch.Tensor) -> torch.Tensor:
        nonlocal count
        torch.mm(a, b, out=out)
        if calls is None or count in calls:
            flip_sign_of_largest(out)
        count += 1
        return out

    return multiply


def pytest_configure(config) -> None:
    if os.environ.get("RANK") == os.environ.get("CLUSTERBENCH_FAKE_SDC_RANK"):
        from clusterbench.probes import burnin

        burnin.multiply = flipping_multiply()
