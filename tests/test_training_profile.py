"""The training probe's profile settings: the price per accelerator-hour, its currency, the preset
and the parallelism, each mistake one clear line."""

from __future__ import annotations

import pytest

from clusterbench.catalog import resolve_cluster
from clusterbench.errors import ProfileError

BASE = """
[cluster]
name = "priced"
{cluster}

[settings]
{settings}

[[expect]]
metric = "train.scaling_efficiency"
params = {{ span = "inter-node" }}
target = 0.9
unit = "fraction"
tolerance = 0.05
provenance = "contract"
source = "purchase agreement, annex C"
"""


def load(write_profile, cluster: str = "", settings: str = ""):
    path = write_profile(BASE.format(cluster=cluster, settings=settings))
    return path, resolve_cluster(str(path), path.parent)


def test_price_preset_and_efficiency_floor_load(write_profile):
    _, profile = load(write_profile, 'price_per_accelerator_hour = 2.49\ncurrency = "USD"',
                      'training_preset = "1b"\ntraining_parallel = "fsdp"')
    assert (profile.cluster.price_per_accelerator_hour, profile.cluster.currency) == (2.49, "USD")
    assert (profile.settings.training_preset, profile.settings.training_parallel) == ("1b", "fsdp")
    (floor,) = profile.expectations_for("train.scaling_efficiency", {"span": "inter-node", "ranks": 16})
    assert floor.fail_threshold == pytest.approx(0.855)


def test_defaults_need_no_price():
    from clusterbench.profile import ClusterInfo, Settings

    assert ClusterInfo("x").price_per_accelerator_hour is None
    assert (Settings().training_preset, Settings().training_parallel) == ("auto", "ddp")


@pytest.mark.parametrize("cluster, settings, fragment", [
    ("price_per_accelerator_hour = -1\ncurrency = \"USD\"", "",
     "'price_per_accelerator_hour' must be greater than zero"),
    ("price_per_accelerator_hour = \"2 USD\"", "", "'price_per_accelerator_hour' must be a number"),
    ("price_per_accelerator_hour = 2.0", "", "'price_per_accelerator_hour' needs its 'currency'"),
    ("price_per_accelerator_hour = 2.0\ncurrency = \"dollars\"", "", "three-letter ISO 4217 code"),
    ("", "training_preset = \"tiney\"",
     "'training_preset' must be one of auto, tiny, small, medium, 1b, got 'tiney'; did you mean 'tiny'?"),
    ("", "training_parallel = \"zero3\"", "'training_parallel' must be one of ddp, fsdp, got 'zero3'"),
])
def test_bad_training_settings_give_one_line(write_profile, cluster, settings, fragment):
    with pytest.raises(ProfileError) as excinfo:
        load(write_profile, cluster, settings)
    message = str(excinfo.value)
    assert "\n" not in message and fragment in message and "test-cluster.toml" in message, message
