"""FakeCudaMemory: a test double of torch.cuda's caching-allocator controls on a GPU node.

A CPU-only torch raises on torch.cuda.reset_peak_memory_stats and friends; this stands in for them,
records every call in order (so a test can see that the peak was read before the cache was emptied,
and that the cache was emptied even when the measurement failed), and reports a set peak.

    memory = FakeCudaMemory(peak_bytes=9 << 30)
    memory.install(monkeypatch)
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch


class FakeCudaMemory:
    def __init__(self, peak_bytes: int) -> None:
        self.peak_bytes = peak_bytes
        self.calls: list[str] = []

    def reset_peak_memory_stats(self, device: Any = None) -> None:
        self.calls.append(f"reset_peak:{device}")

    def max_memory_allocated(self, device: Any = None) -> int:
        self.calls.append(f"read_peak:{device}")
        return self.peak_bytes

    def empty_cache(self) -> None:
        self.calls.append("empty_cache")

    def device(self, index: Any) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def install(self, monkeypatch: Any) -> None:
        for name in ("reset_peak_memory_stats", "max_memory_allocated", "empty_cache", "device"):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))
