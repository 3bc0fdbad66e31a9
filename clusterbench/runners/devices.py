"""The torch device of a rank: its own GPU under NCCL, the CPU under Gloo."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def local_gpu(local_rank: int) -> int:
    """The CUDA device of local rank `local_rank`, as torchrun and srun lay ranks out: one GPU a rank,
    wrapping if there are more ranks than GPUs."""
    import torch

    return local_rank % torch.cuda.device_count()


def bind_gpu(local_rank: int) -> torch.device:
    """Make the local rank's GPU this process's current device, before its process group is made: naming
    it at init binds the group to it, so NCCL's barrier and new groups do not guess another rank's GPU."""
    import torch

    device = torch.device("cuda", local_gpu(local_rank))
    torch.cuda.set_device(device)
    return device


def rank_device(backend: str) -> torch.device:
    """The device this rank's tensors live on: the GPU its process group was bound to (NCCL), else the CPU."""
    import torch

    return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
