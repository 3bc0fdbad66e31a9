"""The `acceptance` fixture: the public API an acceptance test measures through.

A site's own test is a few lines and never mentions ranks:

    def test_dataloader(acceptance):
        acceptance.measure("site.dataloader_gbps", read_shards, per="node")

`measure` runs the function where the metric's scope says (each local device, each node's first
local rank, every rank, or every rank at once for a collective), keeps what it returns or why it
could not, and leaves the judging to rank 0 when the test ends: against the profile, against the
peers, and against zero for counts of errors. See docs/writing-tests.md.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
from collections.abc import Callable, Iterable
from functools import partial
from numbers import Real
from typing import TYPE_CHECKING, Any

import pytest

from clusterbench.judge import Scope
from clusterbench.model import Location, Measurement, NotMeasured, ParamValue, ProbeFailed
from clusterbench.profile import Profile
from clusterbench.registry import SCOPES, MetricSpec, RegistryError, metric_spec
from clusterbench.session.records import Attempt, FiguresJudge, SharedJudge, TestRecord
from clusterbench.world import World

if TYPE_CHECKING:
    from clusterbench.health_checks import HealthState
    from clusterbench.probes.devices import LocalDevice
    from clusterbench.session import AcceptanceRun
    from clusterbench.session.runner_set import Runners

log = logging.getLogger("clusterbench")

# What a measuring function may return: a figure, raw samples (their median is the figure, the
# samples are kept), or Measurements a probe made itself.
Result = Any
MeasureFn = Callable[[], Result]


class AcceptanceTest:
    def __init__(self, run: AcceptanceRun, item: pytest.Item):
        self._run = run
        self._record: TestRecord = run.test_record(item.nodeid)

    # -- what a test may read ------------------------------------------------------------------

    @property
    def quick(self) -> bool:
        """--quick: a short run (fewer sizes, iterations and steps)."""
        return self._run.context.quick

    @property
    def profile(self) -> Profile:
        return self._run.context.profile

    @property
    def devices(self) -> list[LocalDevice]:
        """The devices this rank measures (one accelerator per rank under a launcher)."""
        return self._run.context.devices

    @property
    def world(self) -> World:
        return self._run.context.world

    @property
    def is_reporter(self) -> bool:
        return self._run.context.is_reporter

    @property
    def health(self) -> HealthState:
        """What the GEMM tests sampled on this rank's GPUs under load, for the health tests."""
        return self._run.health

    @property
    def runners(self) -> Runners:
        """The built-in runners (collectives, storage, training), started once on first use."""
        return self._run.runners

    def location(self, device: str) -> Location:
        """This rank's location for `device` ("cuda:0", "cpu", "node")."""
        return self._run.context.location(device)

    # -- measuring -----------------------------------------------------------------------------

    def measure(
        self,
        metric: str,
        fn: Callable[..., Result],
        *,
        per: str | None = None,
        params: dict[str, ParamValue] | None = None,
        compare_peers: bool | None = None,
    ) -> list[Measurement]:
        """Measure `metric` with `fn` where `per` says (default: the metric's declared scope):

        - "device": fn(device) for each of this rank's devices (probes.devices.LocalDevice);
        - "node": fn() on each node's first local rank;
        - "rank": fn() on every rank;
        - "world": fn() on every rank at once (it may run collectives); rank 0's result is the figure.

        fn returns a number in the metric's unit, a list of samples (the median is the figure, the
        samples are kept), or Measurements; it raises NotMeasured(reason) when it cannot measure
        here. `params` go on a figure made from a number. Figures measured per device, node or
        rank are compared with their peers unless `compare_peers=False`. Returns this rank's figures.
        """
        spec = self._spec(metric)
        scope_of = per or spec.per
        if scope_of not in SCOPES:
            pytest.fail(f"acceptance.measure({metric!r}): per={scope_of!r} is not one of {', '.join(SCOPES)}",
                        pytrace=False)
        attempts = self._attempts(scope_of, fn, spec, dict(params or {}))
        default_peers = scope_of != "world" and spec.compared_across_locations
        peers = default_peers if compare_peers is None else compare_peers
        return self.measure_attempts(metric, attempts, params=params, compare_peers=peers)

    def measure_attempts(
        self,
        metric: str,
        attempts: Iterable[tuple[Location, MeasureFn]],
        *,
        params: dict[str, ParamValue] | None = None,
        compare_peers: bool = False,
    ) -> list[Measurement]:
        """The lower level of `measure`: run each (location, fn) on this rank, as given.

        For a probe that yields one attempt per storage target, say, with its own location and
        reason each. Counts of errors are judged against zero and figures of ranks measured at once
        combined into the job's, as the metric declares."""
        spec = self._spec(metric)
        scope = Scope(metric, dict(params or {}))
        record = self._record
        record.scope, record.compare_peers = scope, compare_peers
        record.must_be_zero, record.aggregate = spec.must_be_zero, spec.aggregate is not None
        for location, measure_fn in attempts:
            record.attempts.append(_attempt(spec, scope, location, measure_fn))
        return [m for a in record.attempts for m in a.measurements]

    def share(self, data: Any, judge: SharedJudge) -> None:
        """Send JSON `data` to rank 0 when the test settles, where `judge` sees every rank's data.

        For judgements that need the whole world at once: the node whose driver differs from the
        majority, the pair of nodes whose link is slow. Every rank must call it the same way.
        """
        self._record.shared = data
        self._record.shared_judge = judge

    def also_judge(self, judge: FiguresJudge) -> None:
        """Have `judge(figures)` make more checks on rank 0 when the test settles, over every rank's
        figures of this test (a rule of the judge package: the loss must fall, the slow pair of a
        copy matrix). Every rank must call it the same way."""
        self._record.figures_judge = judge

    def keep_inventory(self, nodes: dict[str, Any]) -> None:
        """What each node is (host name -> inventory), for results.json; called by the health
        test's shared judge on rank 0."""
        self._run.results.run.inventory.update(nodes)

    def show(self, text: str) -> None:
        """Text for the terminal summary (rank 0's only), e.g. an nccl-tests style table."""
        if self.is_reporter:
            self._run.recorder.show(text)

    # -- how ------------------------------------------------------------------------------------

    @staticmethod
    def _spec(metric: str) -> MetricSpec:
        try:
            return metric_spec(metric)
        except RegistryError as exc:
            pytest.fail(str(exc), pytrace=False)

    def _attempts(self, per: str, fn: Callable[..., Result], spec: MetricSpec,
                  params: dict[str, ParamValue]) -> list[tuple[Location, MeasureFn]]:
        world = self.world

        def figures(location: Location, call: MeasureFn) -> MeasureFn:
            return lambda: as_measurements(call(), spec, params, location)

        if per == "device":
            return [(loc, figures(loc, partial(fn, device)))
                    for device in self.devices for loc in [self.location(device.torch_device)]]
        if per == "node":
            node = self.location("node")
            return [(node, figures(node, fn))] if world.local_rank == 0 else []
        if per == "rank":
            mine = self.location(self.devices[0].torch_device if self.devices else "cpu")
            return [(mine, figures(mine, fn))]
        everyone = Location(host=self._run.context.exchange.hosts.get(0, world.host), rank=0,
                            device=f"{world.size} ranks")
        if self.is_reporter:
            return [(everyone, figures(everyone, fn))]
        with contextlib.suppress(NotMeasured):  # rank 0 says why, identically
            fn()  # take part; any other failure fails the test on this rank
        return []


def _attempt(spec: MetricSpec, scope: Scope, location: Location, measure_fn: MeasureFn) -> Attempt:
    try:
        result = measure_fn()
        measurements = result if isinstance(result, list) else [result]
        return Attempt(location, _of_metric(spec, measurements))
    except NotMeasured as exc:
        return Attempt(location, [], str(exc))
    except (ProbeFailed, RegistryError) as exc:
        return Attempt(location, [], f"{scope.label()}: {exc}", crashed=True)
    except Exception as exc:  # a probe bug or a device fault: keep going, fail the test
        log.exception("probe %s crashed on %s", scope.label(), location.device)
        reason = f"probe {scope.label()} crashed: {type(exc).__name__}: {exc}".splitlines()[0]
        return Attempt(location, [], reason, crashed=True)


def _of_metric(spec: MetricSpec, measurements: list[Measurement]) -> list[Measurement]:
    """The figures of `spec`; those of other declared metrics a probe yields beside it (a sweep's
    time beside its busbw) are left to their own tests. A figure of a metric nobody declared, or in
    another unit than declared, is refused: it would never be judged."""
    kept = []
    for m in measurements:
        declared = metric_spec(m.metric)  # raises UnknownMetric for a misspelt one
        if m.metric != spec.name:
            continue
        if m.unit != declared.unit:
            raise RegistryError(f"{m.metric} measured in '{m.unit}', declared in '{declared.unit}'")
        kept.append(m)
    return kept


def as_measurements(result: Result, spec: MetricSpec, params: dict[str, ParamValue],
                    location: Location) -> list[Measurement]:
    """What a measuring function returned, as Measurements of `spec`."""
    if isinstance(result, Measurement):
        return [result]
    if isinstance(result, (list, tuple)) and not result:
        return []  # nothing to measure here: the test says so as NOT MEASURED
    if isinstance(result, list) and result and all(isinstance(r, Measurement) for r in result):
        return result
    if isinstance(result, Real) and not isinstance(result, bool):
        return [Measurement(spec.name, float(result), spec.unit, params, location)]
    if isinstance(result, (list, tuple)) and result and all(isinstance(r, Real) and not isinstance(r, bool)
                                                            for r in result):
        samples = [float(r) for r in result]
        return [Measurement(spec.name, statistics.median(samples), spec.unit, params, location, samples)]
    raise TypeError(f"returned {type(result).__name__}; return a number in {spec.unit}, a list of samples "
                    "or Measurements")
