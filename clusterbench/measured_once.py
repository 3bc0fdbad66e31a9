"""Measure on first use, remember the outcome, success or failure: never wait out a deadline twice.

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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Generic, Hashable, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


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
