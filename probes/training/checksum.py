"""A checksum of a model's parameters, cheap on the device, to compare replicas across ranks.

Data-parallel ranks apply the same averaged gradients with the same optimizer, so after any number
of steps every replica must be bit-for-bit the same. A difference is silent data corruption (a bad
collective, a faulty GPU) that no loss curve would show for a long while.

Per parameter tensor the checksum is the exact integer sum of the raw bit patterns (fp32 read as
int32, accumulated in int64: no rounding, no overflow below 4e9 elements), so any changed bit changes
it, computed where the tensor lives and only the sums copied to the host. It does not see elements
swapped within one tensor, which no fault of arithmetic or transport produces.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

_AS_INTEGER = {1: torch.int8, 2: torch.int16, 4: torch.int32}


@dataclass(frozen=True)
class ParameterChecksum:
    sums: tuple[tuple[str, int], ...]  # (parameter name, sum of its bit patterns), in model order

    def first_difference(self, other: ParameterChecksum) -> str | None:
        """The name of the first parameter whose checksum differs from `other`'s, or None if none does."""
        if [name for name, _ in self.sums] != [name for name, _ in other.sums]:
            return "the parameter names themselves"
        for (name, mine), (_, theirs) in zip(self.sums, other.sums):
            if mine != theirs:
                return name
        return None

    def to_json(self) -> list[list]:
        return [[name, value] for name, value in self.sums]

    @classmethod
    def from_json(cls, data: list[list]) -> ParameterChecksum:
        return cls(tuple((str(name), int(value)) for name, value in data))


@torch.no_grad()
def parameter_checksum(model: nn.Module) -> ParameterChecksum:
    names, sums = [], []
    for name, parameter in model.named_parameters():
        data = parameter.detach()
        integer = _AS_INTEGER.get(data.element_size())
        if integer is None or not data.is_floating_point():
            raise TypeError(f"cannot checksum parameter {name} of dtype {data.dtype}")
        names.append(name.removeprefix("module."))  # DDP wraps the model: compare the same names
        sums.append(data.contiguous().view(integer).sum(dtype=torch.int64))  # accumulated in int64, nothing widened
    values = torch.stack(sums).cpu().tolist() if sums else []
    return ParameterChecksum(tuple(zip(names, (int(v) for v in values))))
