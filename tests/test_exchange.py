"""The store exchange on a real torch TCPStore, one thread per rank: every rank gets rank 0's
decision, the store does not keep old tests' payloads, a missing rank is named within the deadline,
and a problem only rank 0 sees stops every rank at once."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch.distributed as dist

from clusterbench.distributed import Decision, StoreExchange
from clusterbench.errors import ClusterbenchError
from clusterbench.world import World

WORLD_SIZE = 3


def run_ranks(deadline_s: float, body: Callable[[StoreExchange], Any],
              ranks: list[int] | None = None) -> tuple[dict, Any]:
    """Run `body(exchange)` on a thread per rank in `ranks` (all by default), each with its own client
    of one real TCPStore; returns what each returned (or raised) by rank, and the server's store."""
    server = dist.TCPStore("127.0.0.1", 0, 1, True, timeout=dt.timedelta(seconds=30), wait_for_workers=False)
    outcomes: dict[int, Any] = {}

    def rank_main(rank: int) -> None:
        client = dist.TCPStore("127.0.0.1", server.port, 1, False, timeout=dt.timedelta(seconds=30))
        world = World("torchrun", rank, WORLD_SIZE, rank, WORLD_SIZE, "127.0.0.1", server.port, f"h{rank}")
        exchange = StoreExchange(world, dist.PrefixStore("clusterbench", client), "gloo", deadline_s)
        exchange.hosts = {r: f"h{r}" for r in range(WORLD_SIZE)}
        try:
            outcomes[rank] = body(exchange)
        except Exception as exc:  # the test reads what each rank raised
            outcomes[rank] = exc

    threads = [threading.Thread(target=rank_main, args=(rank,))
               for rank in (ranks if ranks is not None else range(WORLD_SIZE))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return outcomes, dist.PrefixStore("clusterbench", server)


def decide_by_sum(payloads: dict[int, dict[str, Any]], missing: list[int]) -> Decision:
    return Decision("passed", "PASS", f"sum={sum(p['figure'] for p in payloads.values())} from {sorted(payloads)}")


def test_every_rank_gets_rank_0s_decision_and_old_payloads_leave_the_store():
    def three_tests(exchange: StoreExchange) -> list[str]:
        rank = exchange.world.rank
        return [exchange.settle(f"t{n}", {"figure": 10 * n + rank}, decide_by_sum).message for n in range(1, 4)]

    outcomes, store = run_ranks(10, three_tests)
    expected = [f"sum={30 * n + 3} from [0, 1, 2]" for n in range(1, 4)]
    assert outcomes == {rank: expected for rank in range(WORLD_SIZE)}
    # Earlier tests' payloads, counters and decisions are gone; the last test's remain for its readers.
    for n in (1, 2):
        assert not any(store.check([f"settle/{n}/{key}"]) for key in ("0", "1", "2", "arrived", "decision"))
    assert store.check([f"settle/3/{rank}" for rank in range(WORLD_SIZE)] + ["settle/3/decision"])


def test_a_rank_that_never_arrives_is_named_within_the_deadline():
    started = time.monotonic()
    outcomes, _ = run_ranks(1.0, lambda exchange: exchange.settle("t1", {"figure": 1}, decide_by_sum), ranks=[0, 1])
    assert time.monotonic() - started < 10
    decision = outcomes[0]
    assert (decision.outcome, decision.missing_ranks) == ("failed", [2])
    assert decision.message.startswith("rank 2 (h2) did not arrive within 1 s\nsum=2 from [0, 1]")
    assert outcomes[1].message == decision.message


@pytest.mark.parametrize("problem", [None, "history.sqlite: not a clusterbench history"])
def test_rank_0s_problem_stops_every_rank_before_the_run(problem):
    def start(exchange: StoreExchange) -> str:
        exchange.agree_to_start(problem if exchange.world.rank == 0 else None)
        return "started"

    started = time.monotonic()
    outcomes, _ = run_ranks(30, start)
    assert time.monotonic() - started < 15  # nobody waited out the 30 s deadline
    if problem is None:
        assert outcomes == {rank: "started" for rank in range(WORLD_SIZE)}
        return
    assert isinstance(outcomes[0], ClusterbenchError) and str(outcomes[0]) == problem
    for rank in (1, 2):
        assert isinstance(outcomes[rank], ClusterbenchError)
        assert str(outcomes[rank]) == f"rank 0 (h0) cannot start the run: {problem}"
