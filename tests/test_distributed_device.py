"""join_world on a GPU node under a launcher: each rank's process group is bound to its own GPU
(device_id), set as the current device first. A fake torch.cuda and init_process_group model the node."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from clusterbench.distributed import join_world
from clusterbench.errors import ClusterbenchError
from clusterbench.world import World


class StopAfterInit(Exception):
    """Raised by the fake init_process_group once it has recorded its call: the test needs no world."""


@pytest.fixture
def gpu_node(monkeypatch):
    """8 GPUs; records set_device and init_process_group calls in order."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", torch.device(device))))

    def init_process_group(backend, **kwargs):
        calls.append(("init", backend, kwargs))
        raise StopAfterInit("stop here")

    monkeypatch.setattr(dist, "init_process_group", init_process_group)
    return calls


@pytest.mark.parametrize("launcher", ["torchrun", "slurm"])
def test_nccl_group_is_bound_to_the_ranks_own_gpu(gpu_node, launcher):
    world = World(launcher, rank=11, size=16, local_rank=3, local_size=8, master_addr="10.0.0.1", master_port=29500,
                  host="gpu-node-1")
    with pytest.raises(ClusterbenchError, match="could not join the 16-rank world"):
        join_world(world, deadline_s=30)
    (set_device, init) = gpu_node
    assert set_device == ("set_device", torch.device("cuda", 3))
    assert init[1] == "nccl" and init[2]["device_id"] == torch.device("cuda", 3)
