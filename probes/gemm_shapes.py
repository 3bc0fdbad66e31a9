"""The GEMM shapes at which mamf-finder's published long searches peaked, per accelerator and dtype.

A GEMM's throughput depends on its shape: how its tiles fill the chip's SMs, how its K loop
pipelines. mamf-finder's published maxima (ml-engineering's MAMF table, the figures the built-in
profile expects) come from searches over thousands of shapes, up to hours long; a sweep of a few
dozen shapes rarely lands on the shape they peaked at (mamf-finder's own README: its quick range
"should give around 80-90% of the maximum achievable result"). So the GPU sweeps always measure the
published best shape of their accelerator: then sweep and target stand on the same shape, and the
target is one a healthy device reaches.

Keys are the hardware table's entry keys (clusterbench/data/hardware.toml), so a device matched to
an entry there finds its shapes here. No torch import: the local profile reads this too.
"""

from __future__ import annotations

from dataclasses import dataclass

# The table's figures are the mean of 100 iterations after 50 warm-up, at the best shape of the search.
SOURCE = "ml-engineering compute/accelerator/README.md MAMF comparison table, 'Best Shape MxNxK' column"

MAMF_DTYPES = ("bf16", "fp8")  # the dtypes the MAMF table publishes


@dataclass(frozen=True)
class PublishedBestShape:
    """One row of the MAMF table: where a long mamf-finder search peaked, and what it measured there."""

    m: int
    n: int
    k: int
    tflops: float  # the published MAMF: mean TFLOP/s over 100 iterations at this shape
    torch_version: str  # the torch build it was measured with
    note: str = ""

    @property
    def label(self) -> str:
        return f"{self.m}x{self.n}x{self.k}"

    def citation(self, dtype: str) -> str:
        extra = f"; {self.note}" if self.note else ""
        return (f"long search: mamf-finder {dtype} MAMF {self.tflops:g} TFLOP/s at {self.label} (MxNxK), "
                f"torch {self.torch_version}{extra} ({SOURCE})")

    def to_json(self) -> dict[str, object]:
        return {"m": self.m, "n": self.n, "k": self.k, "tflops": self.tflops, "torch": self.torch_version}


# Only rows the table publishes; an accelerator or dtype it leaves out has no entry (nothing guessed).
PUBLISHED_BEST_SHAPES: dict[str, dict[str, PublishedBestShape]] = {
    "a100_sxm": {"bf16": PublishedBestShape(1024, 10240, 5120, 271.2, "2.6.0+cu126")},
    "h100_sxm": {
        "bf16": PublishedBestShape(2048, 2048, 13312, 794.5, "2.7.0+cu126"),
        "fp8": PublishedBestShape(1024, 9216, 14336, 1402.6, "2.7.0+cu126"),
    },
    "h200_sxm": {
        # The BF16 table has no H200 row; its H100 SXM row notes "H200 is the same".
        "bf16": PublishedBestShape(2048, 2048, 13312, 794.5, "2.7.0+cu126", note="H100 SXM row, 'H200 is the same'"),
        "fp8": PublishedBestShape(1280, 4096, 12032, 1453.4, "2.7.1+cu128"),
    },
    "b200": {
        "bf16": PublishedBestShape(1792, 16128, 3072, 1745.0, "2.7.1+cu128"),
        "fp8": PublishedBestShape(15360, 4096, 3072, 3432.5, "2.7.1+cu128"),
    },
    "mi300x": {
        "bf16": PublishedBestShape(10240, 15360, 8192, 668.4, "2.5.1+6.3.42131", note="PYTORCH_TUNABLEOP_ENABLED=1"),
    },
}


def published_best_shapes(accelerator_key: str | None) -> dict[str, PublishedBestShape]:
    """The published best shapes of one hardware-table entry, by dtype; empty for an unknown one."""
    return dict(PUBLISHED_BEST_SHAPES.get(accelerator_key or "", {}))
