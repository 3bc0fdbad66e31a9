"""Model and batch sizes the training probe can run: plain data, importable without torch (the profile
validates its preset choice against these names)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelConfig:
    """The shape of the model and of the batch one rank trains on per step."""

    name: str
    vocab_size: int
    seq_len: int
    d_model: int
    n_layers: int
    n_heads: int
    batch: int  # sequences per rank per step
    learning_rate: float

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def tokens_per_rank_step(self) -> int:
        return self.batch * self.seq_len


# Shapes follow GPT-2 small / medium and GPT-3 XL (d_model 2048, head_dim 128) at fewer layers;
# vocabularies are padded to a multiple of 64 as nanoGPT does, for efficient matmuls.
PRESETS: dict[str, ModelConfig] = {
    preset.name: preset
    for preset in (
        # Small enough that two CPU ranks train it for dozens of steps in seconds.
        ModelConfig("tiny", vocab_size=512, seq_len=64, d_model=64, n_layers=2, n_heads=4, batch=8, learning_rate=3e-3),
        ModelConfig("small", vocab_size=50304, seq_len=1024, d_model=768, n_layers=12, n_heads=12, batch=8, learning_rate=6e-4),  # noqa: E501 (a table row)
        ModelConfig("medium", vocab_size=50304, seq_len=1024, d_model=1024, n_layers=24, n_heads=16, batch=8, learning_rate=3e-4),  # noqa: E501 (a table row)
        # ~1.1 B parameters: fits with AdamW state and activations in an 80 GB GPU at batch 4 x 2048.
        ModelConfig("1b", vocab_size=50304, seq_len=2048, d_model=2048, n_layers=18, n_heads=16, batch=4, learning_rate=2e-4),  # noqa: E501 (a table row)
    )
}
