"""Which FSDP2 this torch has, and the mixed-precision policy the probe shards with.

FSDP2 (per-parameter sharding over DTensor) is public as `torch.distributed.fsdp.fully_shard` from
torch 2.6. Torch 2.4 and 2.5 ship the same API, `fully_shard` and `MixedPrecisionPolicy`, at
`torch.distributed._composable.fsdp` (pytorch#141868 moved it for 2.6 and kept the old path working),
so the probe uses whichever this torch has and says which in the figure's details. The probe shards
a group carved out of the world through `DeviceMesh.from_group`, which arrived in 2.4 (pytorch#124787):
on torch 2.3, which pyproject allows, FSDP is NOT MEASURED with the reason, while DDP and the other
probes still run. That is why the floor stays at 2.3 rather than rising to 2.4.

Mixed precision as torchtitan does it: FSDP2's `MixedPrecisionPolicy(param_dtype=bf16,
reduce_dtype=fp32)`, and no autocast on top (torchtitan enables autocast only where FSDP is off).
The policy keeps fp32 sharded weights for the optimizer, all-gathers and computes in bf16 and
reduce-scatters gradients in fp32. Without a policy FSDP2 all-gathers the fp32 weights: twice the
bytes on the wire of the run people compare with.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from clusterbench.model import NotMeasured

# Where each torch line keeps FSDP2, newest first.
FSDP2_MODULES = ("torch.distributed.fsdp", "torch.distributed._composable.fsdp")


@dataclass(frozen=True)
class Fsdp2:
    fully_shard: Callable[..., Any]
    mixed_precision_policy: type
    module: str  # where fully_shard was found, for the figure's details

    @property
    def api(self) -> str:
        return f"{self.module}.fully_shard"


@dataclass(frozen=True)
class ShardingPrecision:
    """The mixed-precision policy one FSDP run shards with, and how the figure's details name it."""

    policy: Any  # a MixedPrecisionPolicy
    description: str


def find_fsdp2() -> Fsdp2:
    """This torch's FSDP2, or NotMeasured saying what is missing."""
    from torch.distributed.device_mesh import DeviceMesh

    if not hasattr(DeviceMesh, "from_group"):
        raise NotMeasured(f"FSDP needs torch >= 2.4 (DeviceMesh.from_group, FSDP2's fully_shard); this is torch "
                          f"{torch.__version__}: set training_parallel = \"ddp\" or upgrade torch")
    for module in FSDP2_MODULES:
        try:
            imported = importlib.import_module(module)
            return Fsdp2(imported.fully_shard, imported.MixedPrecisionPolicy, module)
        except (ImportError, AttributeError):
            continue
    raise NotMeasured(f"FSDP2's fully_shard is in neither {' nor '.join(FSDP2_MODULES)} of torch {torch.__version__}: "
                      f"set training_parallel = \"ddp\"")


def sharding_precision(fsdp: Fsdp2, dtype: str) -> ShardingPrecision:
    """torchtitan's policy for bf16 training (bf16 params, fp32 reduction); none for fp32 training."""
    if dtype == "bf16":
        policy = fsdp.mixed_precision_policy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        return ShardingPrecision(policy, "FSDP2 MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32), no "
                                         "autocast (as torchtitan): bf16 all-gather and compute, fp32 weights and "
                                         "reduce-scatter")
    return ShardingPrecision(fsdp.mixed_precision_policy(), "fp32 throughout (FSDP2 without mixed precision)")
