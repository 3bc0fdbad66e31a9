"""MeasuredOnce: measure on first use, and remember a success or a failure for every later caller."""

from __future__ import annotations

import pytest

from clusterbench.model import NotMeasured
from clusterbench.runners.runner import MeasuredOnce, MeasuredOnceByKey


class Counting:
    """A measurement that counts its calls and returns, or raises, what it is told."""

    def __init__(self, outcome):
        self.outcome, self.calls = outcome, 0

    def __call__(self):
        self.calls += 1
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


def test_a_success_is_measured_once_and_returned_to_every_caller():
    once, measure = MeasuredOnce(), Counting([1.0, 2.0])
    assert not once.measured
    assert once.get(measure) is once.get(measure) is measure.outcome
    assert measure.calls == 1 and once.measured and once.failure is None


def test_a_failure_is_remembered_and_raised_again_without_measuring_again():
    failure = RuntimeError("rank 1 did not arrive within 60 s")
    once, measure = MeasuredOnce(), Counting(failure)
    for _ in range(3):
        with pytest.raises(RuntimeError) as caught:
            once.get(measure)
        assert caught.value is failure  # the same reason, unchanged, in every test
    assert measure.calls == 1 and once.failure is failure


def test_a_not_measured_reason_is_remembered_like_any_failure():
    once, measure = MeasuredOnce(), Counting(NotMeasured("needs 2 ranks"))
    for _ in range(2):
        with pytest.raises(NotMeasured, match="needs 2 ranks"):
            once.get(measure)
    assert measure.calls == 1


def test_an_interrupt_is_not_an_outcome_and_leaves_nothing_remembered():
    once = MeasuredOnce()
    with pytest.raises(KeyboardInterrupt):
        once.get(Counting(KeyboardInterrupt()))
    assert not once.measured
    assert once.get(Counting("measured")) == "measured"


def test_by_key_each_key_is_measured_once_and_keys_do_not_share_outcomes():
    by_key = MeasuredOnceByKey()
    fine, broken = Counting("rows"), Counting(TimeoutError("deadline"))
    assert by_key.get("all_reduce", fine) == by_key.get("all_reduce", fine) == "rows"
    for _ in range(2):
        with pytest.raises(TimeoutError):
            by_key.get("all_gather", broken)
    assert (fine.calls, broken.calls) == (1, 1)
