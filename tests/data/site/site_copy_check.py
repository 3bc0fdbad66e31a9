"""A site's own acceptance test, as a user would drop beside the packaged suite: the tests copy it into
an empty directory as test_site_copy.py (named otherwise here so that `pytest tests` does not collect
it). A real, tiny host-memory copy measured through the `acceptance` fixture."""

import time

import torch

from clusterbench.judge import Scope
from clusterbench.model import Measurement


def _copy_gbps(location) -> Measurement:
    source = torch.rand(1 << 18)  # 1 MiB of float32: small on purpose, the point is the plumbing
    target = torch.empty_like(source)
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        target.copy_(source)
        samples.append(2 * source.numel() * source.element_size() / (time.perf_counter() - start) / 1e9)
    samples.sort()
    return Measurement("memory.copy_gbps", samples[len(samples) // 2], "GB/s", {}, location, samples)


def test_site_copy(acceptance):
    location = acceptance.location("cpu")
    acceptance.measure(Scope("memory.copy_gbps"), [(location, lambda: _copy_gbps(location))])
