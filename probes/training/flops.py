"""Model FLOPs per token and MFU, counted as PaLM (appendix B) and torchtitan count them.

    flops_per_token = 6 * (N - N_embedding) + 12 * L * H * Q * T

6N: each weight does one multiply-add (2 FLOPs) per token forward and twice that backward (the
gradient with respect to the input and to the weight). The embedding tables are lookups, not matmuls,
so they are left out (torchtitan's `6 * (nparams - nparams_embedding)`). 12LHQT: the attention scores
QK^T and the weighted sum over V, 2 * 2 * Q * T FLOPs per head and layer per token forward, three
times that with the backward; no causal discount (PaLM and torchtitan count the full square).
Recomputation is not counted: this is model FLOPs, not hardware FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass

from clusterbench.probes.training.model import GPT, parameter_count
from clusterbench.probes.training.presets import ModelConfig


@dataclass(frozen=True)
class FlopCount:
    parameters: int  # every trainable parameter
    embedding_parameters: int  # token and position tables, left out of the 6N term
    dense_flops_per_token: float  # 6 * (N - N_embedding)
    attention_flops_per_token: float  # 12 * L * H * Q * T

    @property
    def flops_per_token(self) -> float:
        return self.dense_flops_per_token + self.attention_flops_per_token


def flops_per_token(parameters: int, embedding_parameters: int, n_layers: int, n_heads: int, head_dim: int,
                    seq_len: int) -> FlopCount:
    return FlopCount(
        parameters=parameters,
        embedding_parameters=embedding_parameters,
        dense_flops_per_token=6.0 * (parameters - embedding_parameters),
        attention_flops_per_token=12.0 * n_layers * n_heads * head_dim * seq_len,
    )


def model_flops(model: GPT) -> FlopCount:
    config: ModelConfig = model.config
    return flops_per_token(parameter_count(model), model.embedding_parameters(), config.n_layers, config.n_heads,
                           config.head_dim, config.seq_len)


def mfu(flops_per_token: float, tokens_per_s_per_device: float, peak_tflops: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s of one device over its dense peak."""
    if peak_tflops <= 0:
        raise ValueError(f"peak must be positive, got {peak_tflops} TFLOP/s")
    return flops_per_token * tokens_per_s_per_device / (peak_tflops * 1e12)
