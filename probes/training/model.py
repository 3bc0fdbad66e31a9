"""A GPT-style decoder in plain torch, with size presets from a CPU toy to about a billion parameters.

Nothing is downloaded: the weights start random and the probe trains them on synthetic tokens. The
blocks are the usual pre-norm ones (layer norm, causal self-attention through torch's
scaled_dot_product_attention, layer norm, 4x GELU MLP), with learned position embeddings and an
output projection untied from the token embedding, so that the FLOP count of flops.py (which leaves
the embedding tables out: they are lookups, not matmuls) matches what the model computes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clusterbench.probes.training.presets import ModelConfig


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)
        q, k, v = (t.view(batch, seq, self.n_heads, width // self.n_heads).transpose(1, 2) for t in (q, k, v))
        # Flash or memory-efficient kernels on GPUs, the math path on a CPU.
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).contiguous().view(batch, seq, width))


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.d_model)
        self.attention = CausalSelfAttention(config)
        self.norm2 = nn.LayerNorm(config.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(config.d_model, 4 * config.d_model), nn.GELU(), nn.Linear(4 * config.d_model, config.d_model)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embedding = nn.Embedding(config.seq_len, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.apply(_init_weights)

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mean next-token cross-entropy of `tokens` against `targets` (both batch x seq)."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.token_embedding(tokens) + self.position_embedding(positions)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))

    def embedding_parameters(self) -> int:
        """Parameters of the lookup tables, which flops.py leaves out of the 6N count."""
        return self.token_embedding.weight.numel() + self.position_embedding.weight.numel()


def _init_weights(module: nn.Module) -> None:
    # GPT-2's initialisation: a start from which the loss falls at once under AdamW.
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_model(config: ModelConfig, device: torch.device, seed: int) -> GPT:
    """The model with weights drawn from `seed`: every rank that builds it holds the same weights."""
    # Built on the device itself: drawing a billion weights on the host would take seconds.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.device(device):
        torch.manual_seed(seed)
        return GPT(config)


def synthetic_batch(config: ModelConfig, device: torch.device,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token sequences that a model can learn, made on the device itself.

    Each sequence is a random walk over the vocabulary: a random start, then steps of +1, +2 or +3
    (mod vocab). Uniform random tokens would leave nothing to learn (the loss could not fall below
    ln(vocab)); this keeps the tokens random while the next token is predictable to within three
    choices, so the loss falls from ~ln(vocab) towards ln(3) and a probe that does not train shows.
    """
    rows = config.batch
    start = torch.randint(0, config.vocab_size, (rows, 1), device=device, generator=generator)
    steps = torch.randint(1, 4, (rows, config.seq_len + 1), device=device, generator=generator)
    walk = (start + torch.cumsum(steps, dim=1)) % config.vocab_size
    return walk[:, :-1], walk[:, 1:]
