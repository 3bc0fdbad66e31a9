"""FSDP2 across the torch versions pyproject allows (>= 2.3), and torchtitan's mixed-precision policy.

This machine has torch 2.6+; older lines are modelled by taking away what they lack (test doubles via
monkeypatch): 2.4 and 2.5 have FSDP2 only at torch.distributed._composable.fsdp, 2.3 has no
DeviceMesh.from_group. The composable path is imported here, before any test removes the public name:
on this torch it re-exports that name."""

from __future__ import annotations

import pytest
import torch
import torch.distributed._composable.fsdp
import torch.distributed.fsdp
from torch.distributed.device_mesh import DeviceMesh

from clusterbench.model import NotMeasured
from clusterbench.probes.training import loop
from clusterbench.probes.training.fsdp import Fsdp2, find_fsdp2, sharding_precision
from clusterbench.probes.training.loop import TrainingPlan
from clusterbench.probes.training.model import build_model
from clusterbench.probes.training.presets import PRESETS
from test_training_runs import two_local_ranks


def test_newest_torch_shards_through_the_public_api():
    assert find_fsdp2().api == "torch.distributed.fsdp.fully_shard"


def test_torch_2_4_and_2_5_shard_through_the_composable_path(monkeypatch):
    monkeypatch.delattr(torch.distributed.fsdp, "fully_shard")  # as before pytorch#141868 (2.6)
    fsdp = find_fsdp2()
    assert fsdp.api == "torch.distributed._composable.fsdp.fully_shard"
    assert sharding_precision(fsdp, "bf16").policy.param_dtype == torch.bfloat16


def test_torch_2_3_is_not_measured_with_the_reason(monkeypatch):
    monkeypatch.delattr(DeviceMesh, "from_group")
    monkeypatch.setattr(torch, "__version__", "2.3.1")
    with pytest.raises(NotMeasured, match=r"torch >= 2\.4.*this is torch 2\.3\.1.*training_parallel = \"ddp\""):
        find_fsdp2()


def test_a_torch_without_fully_shard_anywhere_is_not_measured(monkeypatch):
    import torch.distributed._composable.fsdp as composable

    monkeypatch.delattr(torch.distributed.fsdp, "fully_shard")
    monkeypatch.delattr(composable, "fully_shard")
    with pytest.raises(NotMeasured, match="fully_shard is in neither"):
        find_fsdp2()


def test_bf16_policy_is_torchtitans_and_fp32_casts_nothing():
    fsdp = find_fsdp2()
    bf16 = sharding_precision(fsdp, "bf16")
    assert (bf16.policy.param_dtype, bf16.policy.reduce_dtype) == (torch.bfloat16, torch.float32)
    assert "param_dtype=bf16, reduce_dtype=fp32" in bf16.description and "no autocast" in bf16.description
    fp32 = sharding_precision(fsdp, "fp32")
    assert (fp32.policy.param_dtype, fp32.policy.reduce_dtype) == (None, None)


class FakeFullyShard:
    """A test double of fully_shard that records what each call shards and with which policy."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def __call__(self, module, *, mesh, mp_policy):
        self.calls.append((type(module).__name__, mp_policy))
        return module


def test_every_sharded_module_gets_the_bf16_policy_and_autocast_is_off(monkeypatch):
    """On a GPU node (bf16): without the policy FSDP2 would all-gather fp32 weights."""
    real = find_fsdp2()
    fake = FakeFullyShard()
    monkeypatch.setattr(loop, "find_fsdp2", lambda: Fsdp2(fake, real.mixed_precision_policy, "fake.fsdp"))
    monkeypatch.setattr(DeviceMesh, "from_group", staticmethod(lambda group, device_type: "a mesh"))
    monkeypatch.setattr(loop.dist, "get_world_size", lambda group=None: 2)
    plan = TrainingPlan(PRESETS["tiny"], "bf16", warmup=1, steps=2, parallel="fsdp")
    model = build_model(plan.config, torch.device("cpu"), plan.seed)
    wrapping = loop._wrap(model, plan, torch.device("cpu"), group=object())
    assert [name for name, _ in fake.calls] == ["Block"] * plan.config.n_layers + ["GPT"]
    assert {(p.param_dtype, p.reduce_dtype) for _, p in fake.calls} == {(torch.bfloat16, torch.float32)}
    assert wrapping.autocast is False and wrapping.fsdp_api == "fake.fsdp.fully_shard"
    assert "param_dtype=bf16" in wrapping.precision


def test_ddp_and_one_rank_keep_bf16_autocast():
    plan = TrainingPlan(PRESETS["tiny"], "bf16", warmup=1, steps=2)
    model = build_model(plan.config, torch.device("cpu"), plan.seed)
    wrapping = loop._wrap(model, plan, torch.device("cpu"), group=None)
    assert wrapping.module is model and wrapping.autocast and wrapping.fsdp_api == ""
    assert wrapping.precision == "bf16 autocast over fp32 weights"


def test_an_fsdp_run_on_torch_2_3_is_not_measured_before_any_rank_starts(monkeypatch):
    monkeypatch.delattr(DeviceMesh, "from_group")

    def no_spawn(*args, **kwargs):
        raise AssertionError("ranks were started for a run that cannot shard")

    monkeypatch.setattr("clusterbench.runners.local_ranks.run_local_ranks", no_spawn)
    runs = two_local_ranks("fsdp")
    with pytest.raises(NotMeasured, match=r"torch >= 2\.4"):
        runs.figures("train.loss_drop")
