"""An fp64 reference for a GEMM's result that costs a matrix-vector product, not a GEMM: its column sums.

Algorithm-based fault tolerance (Huang and Abraham, 1984): for C = A @ B, the column sums of C equal
(1^T A) @ B. Both sides are computed here in fp64 on the host, from the very operands the device
multiplied, so the device's result is checked against a higher-precision reference without a second
GEMM. The device rounds, so the two differ by up to a rigorous worst-case bound (Higham, Accuracy and
Stability of Numerical Algorithms, 3.5): for column j,

    |sum_i C'_ij - ((1^T A) B)_j|  <=  gamma_K ((1^T |A|) |B|)_j  +  u_out / (1 - u_out) sum_i |C'_ij|

with gamma_K = K u_acc / (1 - K u_acc), u_acc the unit roundoff of the accumulation (fp32 on every
device here: bf16 GEMMs accumulate in fp32 once reduced-precision reductions are off, see
burnin.gemm_settings) and u_out that of the output's dtype: the first term bounds the accumulation,
the second the final rounding of each element to the output's dtype, taken from the result itself
(round to nearest moves an element by at most u_out of itself; a corrupted huge element raises that
term by u_out of its size but the column sum by all of it). The bound holds whatever order or
blocking the library sums in, so an honest device never exceeds it; a result beyond it is wrong.

What it catches: a wrong row or tile, an exponent flipped up, NaN or Inf; at small K (the CPU's
512) a wrong sign or high mantissa bit of an ordinary element too. What it cannot: a change smaller
than the worst case of rounding, which grows with K (at 8192^3 bf16 a column may honestly move by
~5e-4 of its sum of |products|): a flip of a low mantissa bit, or a sign of an ordinary element.
Those the bitwise comparisons catch (each repeat against the first result, each device against its
peers); this reference decides which side is wrong where peers split evenly and it can tell.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ACCUMULATION_ROUNDOFF = 2.0**-24  # fp32
OUTPUT_ROUNDOFF = {torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}
# Rows of B converted to fp64 at a time: the reference of an 8192^2 product needs no 512 MiB copy.
ROW_BLOCK = 1024


@dataclass(frozen=True)
class ColumnChecksum:
    """The fp64 reference column sums of one product and how far a device's may honestly differ."""

    expected: torch.Tensor  # (N,) fp64
    accumulation_bound: torch.Tensor  # (N,) fp64, >= 0: gamma_K (1^T |A|) |B|
    output_roundoff: float  # u_out / (1 - u_out)

    def worst_ratio(self, result: torch.Tensor) -> float:
        """max_j |column sum_j of `result` - expected_j| / bound_j: at most 1 for a right result.
        A NaN or infinite element (an exponent flipped to all ones) reads as infinitely wrong."""
        observed = result.sum(dim=0, dtype=torch.float64)
        bound = self.accumulation_bound + self.output_roundoff * result.abs().sum(dim=0, dtype=torch.float64)
        ratio = (observed - self.expected).abs() / bound
        ratio = torch.nan_to_num(ratio, nan=float("inf"))
        return float(ratio.max())


def column_checksum(a: torch.Tensor, b: torch.Tensor, out_dtype: torch.dtype) -> ColumnChecksum:
    """The reference of C = a @ b (host tensors, the operands as the device got them)."""
    k = a.shape[1]
    gamma = k * ACCUMULATION_ROUNDOFF / (1 - k * ACCUMULATION_ROUNDOFF)
    u_out = OUTPUT_ROUNDOFF[out_dtype]
    row_sums = a.sum(dim=0, dtype=torch.float64)
    abs_row_sums = a.abs().sum(dim=0, dtype=torch.float64)
    expected = _vector_times(row_sums, b)
    magnitude = _vector_times(abs_row_sums, b.abs())
    # 1% on top covers the fp64 sums' own rounding (~K 2^-53, negligible beside fp32's) and a tiny
    # floor keeps an all-zero column from dividing by zero.
    return ColumnChecksum(expected, gamma * magnitude * 1.01 + 1e-30, u_out / (1 - u_out) * 1.01)


def _vector_times(vector: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    total = torch.zeros(matrix.shape[1], dtype=torch.float64)
    for start in range(0, matrix.shape[0], ROW_BLOCK):
        block = matrix[start:start + ROW_BLOCK].to(torch.float64)
        total += vector[start:start + ROW_BLOCK] @ block
    return total
