"""The probe registry: every metric clusterbench measures, declared by the probe that measures it.

A probe module declares its metrics once, beside the code that measures them:

    PROBE = declare_probe(
        "memory", per="device", settings=(),
        metrics=[metric("memory.copy_gbps", "GB/s", "higher", "memory", "device copy bandwidth")],
    )

and `metric_spec(name)` (or the `METRICS` mapping of clusterbench.metrics) finds it, whoever asks:
the profile reader, the judge, the history, the reports. A site registers its own metrics from its
conftest.py with `clusterbench.register_metric`. What the registry refuses, it refuses with one line
where the mistake is made: a unit it does not know, a metric declared twice, a name nobody declared
(with the nearest declared names), so that a typo never becomes a silent "nothing to measure" or an
INTERNALERROR at the end of a run.

Built-in probes register when their modules are imported; the first lookup imports every module of
clusterbench.probes (that is what "one place to add a probe" costs: torch is imported once).
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from clusterbench.errors import ClusterbenchError, nearest
from clusterbench.model import Better

# Decimal units, as the reference tools state them (GB/s = 1e9 bytes/s; Gb/s for link rates as a
# port reports them). A unit outside this list is refused at declaration: a profile's expectation
# must state its metric's unit verbatim, and "GiB/s" beside "GB/s" would silently differ by 7%.
UNITS = frozenset({
    "TFLOP/s", "GB/s", "Gb/s", "us", "ms", "s", "count", "IOPS", "ops/s", "tokens/s", "fraction",
    "cost/Mtokens", "gen", "lanes", "C", "W", "MHz", "bytes",
})
# The pytest markers a metric's tests carry; `site` is for metrics a site registers itself.
FAMILIES = ("compute", "memory", "network", "storage", "training", "health", "site")
# Where a probe's figure comes from: each local device, each node (its first local rank), each rank,
# or the whole world at once (a collective every rank joins; rank 0 reports it).
SCOPES = ("device", "node", "rank", "world")
# How figures of several ranks measured at once combine into the job's figure: a throughput sums,
# a latency is the worst rank's, "n_min" is N x the slowest rank (MLPerf Storage's checkpoint rule).
AGGREGATE_RULES = ("sum", "max", "n_min")
BUILTIN_PROBES_PACKAGE = "clusterbench.probes"


class RegistryError(ClusterbenchError):
    """A metric or probe declared wrongly (unknown unit, family or scope; declared twice)."""


class UnknownMetric(RegistryError, KeyError):
    """A metric name nobody declared. A KeyError too, so `name in METRICS` and `.get` keep working."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


@dataclass(frozen=True)
class MetricSpec:
    name: str
    unit: str
    better: Better
    family: str  # the pytest marker of the tests that measure it
    description: str
    params: tuple[str, ...] = ()  # the params a measurement of it carries
    # A sweep param: an expectation that leaves it open is judged at the sweep's largest value.
    judged_at_max: str | None = None
    aggregate: str | None = None  # one of AGGREGATE_RULES, or None: not combined across ranks
    # A count of errors (wrong elements, mismatching bits): judged against zero whatever the profile says.
    must_be_zero: bool = False
    per: str = ""  # one of SCOPES; the declaring probe's unless the metric states its own
    # False where the probe's own judge compares the figures (a node's GPU pairs, clusterbench.judge.p2p):
    # the peers check and the report's straggler list then leave them alone, so the two never disagree.
    compared_across_locations: bool = True
    probe: str = ""  # the probe (or "site") that declared it


@dataclass(frozen=True)
class ProbeSpec:
    """A probe as the registry knows it: what it measures, over which scope, reading which settings."""

    name: str
    per: str
    metrics: tuple[MetricSpec, ...]
    settings: tuple[str, ...] = ()  # the profile's [settings] keys (or sections) it reads
    module: str = ""

    @property
    def metric_names(self) -> list[str]:
        """Its metrics in declaration order: what its benchmark test is parametrized over."""
        return [spec.name for spec in self.metrics]


def metric(
    name: str,
    unit: str,
    better: str | Better,
    family: str,
    description: str,
    params: Iterable[str] = (),
    *,
    judged_at_max: str | None = None,
    aggregate: str | None = None,
    must_be_zero: bool = False,
    per: str = "",
    compared_across_locations: bool = True,
) -> MetricSpec:
    """A metric's declaration, checked: its unit, family, direction and aggregate rule must be known."""
    if not name or "." not in name or name != name.strip() or " " in name:
        raise RegistryError(f"metric name '{name}': must be 'family.figure' (e.g. 'site.dataloader_gbps'), no spaces")
    if unit not in UNITS:
        raise RegistryError(f"metric {name}: unit '{unit}' is not one of {', '.join(sorted(UNITS))} (decimal units)"
                            f"{nearest(unit, UNITS)}")
    if family not in FAMILIES:
        raise RegistryError(f"metric {name}: family '{family}' is not one of {', '.join(FAMILIES)}")
    if per and per not in SCOPES:
        raise RegistryError(f"metric {name}: per '{per}' is not one of {', '.join(SCOPES)}")
    if aggregate is not None and aggregate not in AGGREGATE_RULES:
        raise RegistryError(f"metric {name}: aggregate '{aggregate}' is not one of {', '.join(AGGREGATE_RULES)}")
    params = tuple(params)
    if judged_at_max is not None and judged_at_max not in params:
        raise RegistryError(f"metric {name}: judged_at_max '{judged_at_max}' is not one of its params {params}")
    try:
        direction = better if isinstance(better, Better) else Better(better)
    except ValueError:
        raise RegistryError(f"metric {name}: better '{better}' must be 'higher' or 'lower'") from None
    if must_be_zero and direction is not Better.LOWER:
        raise RegistryError(f"metric {name}: a count that must be zero is better lower")
    return MetricSpec(name, unit, direction, family, description, params, judged_at_max, aggregate, must_be_zero, per,
                      compared_across_locations)


@dataclass
class _Registry:
    metrics: dict[str, MetricSpec] = field(default_factory=dict)
    probes: dict[str, ProbeSpec] = field(default_factory=dict)
    builtins_loaded: bool = False
    loading: bool = False
    # Two locks: `loading_lock` is held while the built-in modules import, and a module declaring
    # its probe (in another thread, mid-import) needs only `lock`; one lock for both could deadlock
    # with the import lock of the module being declared.
    lock: threading.RLock = field(default_factory=threading.RLock)
    loading_lock: threading.RLock = field(default_factory=threading.RLock)

    def add(self, probe: ProbeSpec) -> None:
        with self.lock:
            known = self.probes.get(probe.name)
            if known is not None:
                if known == probe:
                    return  # the same module imported again (importlib.reload, a second import path)
                raise RegistryError(f"probe '{probe.name}' declared twice: in {known.module} and in {probe.module}")
            for spec in probe.metrics:
                earlier = self.metrics.get(spec.name)
                if earlier is not None:
                    raise RegistryError(f"metric {spec.name} declared twice: by probe '{earlier.probe}' and by "
                                        f"probe '{probe.name}' ({probe.module}); one probe owns each metric")
            self.probes[probe.name] = probe
            self.metrics.update((spec.name, spec) for spec in probe.metrics)

    def load_builtins(self) -> None:
        """Import every module of clusterbench.probes once; each declares its probes as it loads.
        A lookup made while loading (a probe that asks for a metric at import time) sees what is
        declared so far instead of recursing."""
        with self.loading_lock:
            if self.builtins_loaded or self.loading:
                return
            self.loading = True
            try:
                package = importlib.import_module(BUILTIN_PROBES_PACKAGE)
                for module in pkgutil.walk_packages(package.__path__, prefix=f"{BUILTIN_PROBES_PACKAGE}."):
                    importlib.import_module(module.name)
                self.builtins_loaded = True
            finally:
                self.loading = False


_REGISTRY = _Registry()


def declare_probe(
    name: str, *, per: str, metrics: Iterable[MetricSpec], settings: Iterable[str] = (), module: str = ""
) -> ProbeSpec:
    """Register a probe and its metrics; called at the top level of the probe's module."""
    if per not in SCOPES:
        raise RegistryError(f"probe '{name}': per '{per}' is not one of {', '.join(SCOPES)}")
    specs = tuple(_owned(spec, name, per) for spec in metrics)
    if not specs:
        raise RegistryError(f"probe '{name}' declares no metric")
    names = [spec.name for spec in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise RegistryError(f"probe '{name}' declares {', '.join(repeated)} more than once")
    probe = ProbeSpec(name, per, specs, tuple(settings), module)
    _REGISTRY.add(probe)
    return probe


def _owned(spec: MetricSpec, probe: str, per: str) -> MetricSpec:
    # A probe measured per device may still yield a node's figure (gpu.count): a scope the metric
    # states itself stays, else it is the probe's.
    return replace(spec, probe=probe, per=spec.per or per)


def register_metric(
    name: str,
    *,
    unit: str,
    better: str,
    description: str,
    per: str = "rank",
    family: str = "site",
    params: Iterable[str] = (),
    aggregate: str | None = None,
    must_be_zero: bool = False,
) -> MetricSpec:
    """A site's own metric, registered from its conftest.py before collection:

        import clusterbench
        clusterbench.register_metric("site.dataloader_gbps", unit="GB/s", better="higher",
                                     description="dataloader read rate from the object store", per="node")

    A profile may then state expectations on it like on any built-in metric."""
    params = tuple(params)
    if aggregate is not None and "ranks" not in params:
        # The job's figure carries `ranks` (judge.aggregate_ranks): an expectation on it names them.
        params = (*params, "ranks")
    spec = metric(name, unit, better, family, description, params, aggregate=aggregate, must_be_zero=must_be_zero)
    return declare_probe(name, per=per, metrics=[spec], module="site").metrics[0]


def metric_spec(name: str) -> MetricSpec:
    """The declared metric `name`, or UnknownMetric naming the nearest declared ones."""
    _REGISTRY.load_builtins()
    spec = _REGISTRY.metrics.get(name)
    if spec is None:
        raise UnknownMetric(f"unknown metric '{name}'{nearest(name, _REGISTRY.metrics)}; a site declares its own "
                            "with clusterbench.register_metric(...) in conftest.py")
    return spec


def probes() -> dict[str, ProbeSpec]:
    _REGISTRY.load_builtins()
    return dict(_REGISTRY.probes)


def unregister(name: str) -> None:
    """Forget a site probe or metric (tests, and a pytester session that registered one)."""
    with _REGISTRY.lock:
        probe = _REGISTRY.probes.pop(name, None)
        for spec in probe.metrics if probe else ():
            _REGISTRY.metrics.pop(spec.name, None)


class DeclaredMetrics(Mapping[str, MetricSpec]):
    """Every declared metric by name, as a read-only mapping that loads the built-in probes on first use."""

    def __getitem__(self, name: str) -> MetricSpec:
        return metric_spec(name)

    def __iter__(self) -> Iterator[str]:
        _REGISTRY.load_builtins()
        return iter(dict(_REGISTRY.metrics))

    def __len__(self) -> int:
        _REGISTRY.load_builtins()
        return len(_REGISTRY.metrics)

    def __contains__(self, name: object) -> bool:
        _REGISTRY.load_builtins()
        return name in _REGISTRY.metrics
