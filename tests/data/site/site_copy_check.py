"""A site's own acceptance test, as a user would drop beside the packaged suite: the tests copy it into
an empty directory as test_site_copy.py (named otherwise here so that `pytest tests` does not collect
it). A real, tiny host-memory copy measured through the `acceptance` fixture's public API."""

import time

import torch


def copy_gbps_samples() -> list[float]:
    source = torch.rand(1 << 18)  # 1 MiB of float32: small on purpose, the point is the plumbing
    target = torch.empty_like(source)
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        target.copy_(source)
        samples.append(2 * source.numel() * source.element_size() / (time.perf_counter() - start) / 1e9)
    return samples


def test_site_copy(acceptance):
    acceptance.measure("memory.copy_gbps", copy_gbps_samples, per="rank")
