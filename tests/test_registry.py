"""The probe registry: metrics declared by the probes that measure them, and refused when wrong."""

from __future__ import annotations

import pytest

from clusterbench import registry
from clusterbench.metrics import METRICS
from clusterbench.profile import Settings
from clusterbench.registry import RegistryError, UnknownMetric, declare_probe, metric, metric_spec


@pytest.fixture
def forget():
    names: list[str] = []
    yield names.append
    for name in names:
        registry.unregister(name)


def test_every_builtin_metric_is_declared_by_one_probe_module():
    probes = registry.probes()
    owners = {spec.name: spec.probe for spec in METRICS.values()}
    assert len(owners) == len(METRICS) >= 47
    for probe in probes.values():
        if probe.module != "site":
            assert probe.module.startswith("clusterbench.probes."), probe
    assert METRICS["gemm.tflops"].probe == "gemm" and METRICS["gemm.tflops"].per == "device"
    assert METRICS["gpu.count"].per == "node" and METRICS["gpu.power_w"].per == "device"
    assert METRICS["collective.wrong"].must_be_zero


def test_the_settings_a_probe_declares_exist():
    known = {f for f in Settings.__dataclass_fields__}
    for probe in registry.probes().values():
        for setting in probe.settings:
            assert setting in known or setting.startswith("["), (probe.name, setting)


def test_an_unknown_metric_names_the_nearest_ones():
    with pytest.raises(UnknownMetric, match=r"unknown metric 'gemm.tflop'; did you mean 'gemm.tflops'\?"):
        metric_spec("gemm.tflop")
    assert "gemm.tflop" not in METRICS and METRICS.get("gemm.tflop") is None


@pytest.mark.parametrize("kwargs, message", [
    ({"unit": "GiB/s"}, "unit 'GiB/s' is not one of"),
    ({"family": "gpu"}, "family 'gpu' is not one of"),
    ({"better": "faster"}, "better 'faster' must be 'higher' or 'lower'"),
    ({"aggregate": "mean"}, "aggregate 'mean' is not one of"),
])
def test_a_wrong_declaration_is_refused_where_it_is_made(kwargs, message):
    arguments = {"unit": "GB/s", "better": "higher", "family": "site", "description": "x", **kwargs}
    with pytest.raises(RegistryError, match=message):
        metric("site.x_gbps", arguments["unit"], arguments["better"], arguments["family"], arguments["description"],
               aggregate=arguments.get("aggregate"))


def test_a_metric_declared_twice_is_refused(forget):
    with pytest.raises(RegistryError, match="metric gemm.tflops declared twice: by probe 'gemm'"):
        declare_probe("another_gemm", per="device",
                      metrics=[metric("gemm.tflops", "TFLOP/s", "higher", "compute", "x")])
    forget("site.a_count")
    registry.register_metric("site.a_count", unit="count", better="lower", description="a")
    with pytest.raises(RegistryError, match="declared twice"):
        declare_probe("site_b", per="rank", metrics=[metric("site.a_count", "count", "lower", "site", "b")])


def test_a_site_metric_is_known_to_profiles_once_registered(forget, write_profile):
    from clusterbench.catalog import resolve_cluster
    from clusterbench.errors import ProfileError

    text = ('[cluster]\nname = "s"\n[[expect]]\nmetric = "site.queue_s"\ntarget = 1\nunit = "s"\n'
            'better = "lower"\nprovenance = "contract"\nsource = "x"\n')
    path = write_profile(text)
    with pytest.raises(ProfileError, match="unknown metric 'site.queue_s'"):
        resolve_cluster(str(path), path.parent)
    forget("site.queue_s")
    registry.register_metric("site.queue_s", unit="s", better="lower", description="time in the queue")
    assert resolve_cluster(str(path), path.parent).expectations[0].metric == "site.queue_s"


def test_a_site_metric_with_an_aggregate_rule_takes_expectations_on_the_job_s_figure(forget, write_profile):
    from clusterbench.catalog import resolve_cluster

    forget("site.shards_gbps")
    spec = registry.register_metric("site.shards_gbps", unit="GB/s", better="higher", aggregate="sum",
                                    description="every rank reading its shards at once")
    assert "ranks" in spec.params  # the job's figure carries `ranks` (judge.aggregate_ranks)
    path = write_profile('[cluster]\nname = "s"\n[[expect]]\nmetric = "site.shards_gbps"\nparams = { ranks = 16 }\n'
                         'target = 100\nunit = "GB/s"\nprovenance = "contract"\nsource = "x"\n')
    assert resolve_cluster(str(path), path.parent).expectations[0].params == {"ranks": 16}
