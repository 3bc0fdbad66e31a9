"""What every runner is: measure on first use, remember the outcome, success or failure; and where its ranks run.

Several tests read the figures of one run (a collective sweep feeds its busbw test, its time test and
its #wrong test). The first of them measures; the others get the same figures. A measurement that
failed is remembered too and raised again, unchanged, to every later caller: under a launcher a dead
rank makes each retry wait out the whole deadline again, and a NOT MEASURED reason stays the same
reason in every test that needed the figure.

    once = MeasuredOnce()                  # one figure set, e.g. a training run
    runs = once.get(self._measure)         # measures on the first call only

    sweeps = MeasuredOnceByKey()           # one per key, e.g. per collective op
    rows = sweeps.get(op, lambda: self._measure(op))

Only `Exception`s are remembered: a KeyboardInterrupt (or a test's own exit) is not a measurement's
outcome and propagates without being kept.

A `Runner` keeps its outcomes by key (`measured_once`). A `WorldRunner` does collective work over a
world of ranks, and `on_every_rank` is the one place that decides which world: under a launcher
(torchrun, srun, mpirun) this process is one rank of the launcher's world, whose process group is up;
under plain pytest on one host it starts its own local ranks (clusterbench.runners.local_ranks).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from clusterbench.model import Location

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

# Local ranks get this many collective deadlines for a whole run (a sweep, a ladder): each collective
# must finish within one deadline, and a run is several of them.
LOCAL_RUN_DEADLINES = 3


@dataclass
class MeasuredOnce(Generic[T]):
    """The outcome of one measurement: taken by the first `get`, returned or re-raised by every later one."""

    _value: T | None = None
    _failure: Exception | None = None
    _done: bool = False

    def get(self, measure: Callable[[], T]) -> T:
        """`measure()` on the first call; afterwards its result again, or its exception raised again."""
        if not self._done:
            try:
                self._value = measure()
            except Exception as exc:
                self._failure, self._done = exc, True
                raise
            # A BaseException (KeyboardInterrupt) leaves nothing remembered: the next call measures.
            self._done = True
        if self._failure is not None:
            raise self._failure
        return self._value  # type: ignore[return-value]

    @property
    def measured(self) -> bool:
        """Whether a measurement has been taken (successfully or not)."""
        return self._done

    @property
    def failure(self) -> Exception | None:
        """The remembered failure, if the measurement failed."""
        return self._failure


@dataclass
class MeasuredOnceByKey(Generic[K, T]):
    """One MeasuredOnce per key: each key measured on its first `get`, remembered after."""

    _by_key: dict[K, MeasuredOnce[T]] = field(default_factory=dict)

    def get(self, key: K, measure: Callable[[], T]) -> T:
        """`measure()` on the first call for `key`; afterwards that key's result or failure again."""
        return self._by_key.setdefault(key, MeasuredOnce()).get(measure)


@dataclass
class Runner:
    """The probes of one acceptance run behind one rule: each figure set measured once, on first use."""

    _outcomes: MeasuredOnceByKey[Hashable, Any] = field(
        default_factory=MeasuredOnceByKey, init=False, repr=False, compare=False)

    def measured_once(self, key: Hashable, measure: Callable[[], T]) -> T:
        """`measure()` the first time `key` is asked for; its result or its failure to every later caller."""
        return self._outcomes.get(key, measure)


@dataclass
class WorldRunner(Runner):
    """A runner whose work is collective: every rank of a world runs it together."""

    distributed: bool  # True under a launcher: the world's process group is already up
    backend: str
    ranks: int
    location: Location
    hosts: dict[int, str]  # rank -> host, under a launcher the world's

    @property
    def rank_hosts(self) -> dict[int, str]:
        """Where each rank runs: the launcher's world says; local ranks all run on this host."""
        return self.hosts if self.distributed else {rank: self.location.host for rank in range(self.ranks)}

    def on_every_rank(self, work: Callable[..., T], *args: Any, deadline_s: float) -> T:
        """`work(*args)` on every rank of the run's world; what rank 0 returns (every group of a run
        includes rank 0, so it holds every figure). `deadline_s` is the deadline of each collective."""
        if self.distributed:
            return work(*args)
        from clusterbench.runners import local_ranks

        results = local_ranks.run_local_ranks(
            _rank_0_keeps_its_result, self.ranks, args=(work, args), backend=self.backend,
            timeout=LOCAL_RUN_DEADLINES * deadline_s, collective_timeout=deadline_s,
        )
        return results[0]


def _rank_0_keeps_its_result(rank: int, world_size: int, work: Callable[..., T], args: tuple) -> T | None:
    result = work(*args)
    return result if rank == 0 else None  # rank 0's result is the run's; the others need not ship theirs
