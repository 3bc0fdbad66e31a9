"""One world across every rank of a job: the process group, and a hang-proof exchange of outcomes.

Every rank sends rank 0 what it saw in a test; rank 0 decides the test's outcome for all and
publishes it; every rank then ends the test the same way. The exchange runs over the process
group's key-value store rather than over a collective, so a rank that never arrives is detected by
a deadline and named, instead of blocking everybody forever.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from clusterbench.errors import ClusterbenchError
from clusterbench.world import World

log = logging.getLogger("clusterbench")

POLL_INTERVAL_S = 0.02


class WorldBroken(ClusterbenchError):
    """Ranks went missing; no further collective work can be trusted in this run."""


@dataclass
class Decision:
    """Rank 0's verdict on one test, applied identically on every rank."""

    outcome: str  # "passed", "failed" or "skipped"
    verdict: str
    message: str = ""
    missing_ranks: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "verdict": self.verdict, "message": self.message,
                "missing_ranks": self.missing_ranks}


DecideFn = Callable[[dict[int, dict[str, Any]], list[int]], Decision]


class Exchange(Protocol):
    world: World
    backend: str | None
    hosts: dict[int, str]

    def settle(self, tag: str, payload: dict[str, Any], decide: DecideFn) -> Decision: ...

    def agree_to_start(self, problem: str | None) -> None: ...

    def leave(self) -> None: ...


class SoloExchange:
    """A world of one: the only rank decides for itself."""

    def __init__(self, world: World):
        self.world = world
        self.backend: str | None = None
        self.hosts = {0: world.host}

    def settle(self, tag: str, payload: dict[str, Any], decide: DecideFn) -> Decision:
        return decide({0: payload}, [])

    def agree_to_start(self, problem: str | None) -> None:
        if problem:
            raise ClusterbenchError(problem)

    def leave(self) -> None:
        pass


class StoreExchange:
    """Settles each test through the process group's store, with a deadline on every wait."""

    def __init__(self, world: World, store: Any, backend: str, deadline_s: float):
        self.world = world
        self.store = store
        self.backend: str | None = backend
        self.deadline_s = deadline_s
        self.broken: str | None = None
        self.hosts: dict[int, str] = {}
        self._sequence = 0

    def register_hosts(self) -> None:
        """Learn every rank's host name, so that a missing rank can be named with its host."""
        self.store.set(f"host/{self.world.rank}", self.world.host)
        keys = [f"host/{r}" for r in range(self.world.size)]
        self._wait_all(keys, "joining the world")
        self.hosts = {r: self.store.get(k).decode() for r, k in enumerate(keys)}

    def describe(self, ranks: list[int]) -> str:
        return ", ".join(f"rank {r} ({self.hosts.get(r, 'host unknown')})" for r in ranks)

    def _wait_all(self, keys: list[str], what: str) -> None:
        try:
            self.store.wait(keys, dt.timedelta(seconds=self.deadline_s))
        except Exception as exc:  # the store raises its own timeout / connection errors
            missing = [i for i, k in enumerate(keys) if not self._has(k)]
            raise WorldBroken(
                f"ranks {missing} did not arrive within {self.deadline_s:g} s while {what}: {exc}".splitlines()[0]
            ) from None

    def _has(self, key: str) -> bool:
        try:
            return bool(self.store.check([key]))
        except Exception:
            return False

    def settle(self, tag: str, payload: dict[str, Any], decide: DecideFn) -> Decision:
        if self.broken:
            return Decision("failed", "FAIL", f"not run: {self.broken}")
        self._sequence += 1
        prefix = f"settle/{self._sequence}"
        payload = {**payload, "tag": tag}
        try:
            self.store.set(f"{prefix}/{self.world.rank}", json.dumps(payload))
            self.store.add(f"{prefix}/arrived", 1)
            if self._sequence > 1:
                # Rank 0 read this rank's previous payload before deciding that test: drop it, so
                # the store holds at most two tests' payloads rather than the whole run's.
                self.store.delete_key(f"settle/{self._sequence - 1}/{self.world.rank}")
            if self.world.rank == 0:
                decision = self._decide(prefix, tag, decide)
                self.store.set(f"{prefix}/decision", json.dumps(decision.to_json()))
            else:
                decision = self._await_decision(prefix)
        except WorldBroken as exc:
            self.broken = str(exc)
            return Decision("failed", "FAIL", str(exc))
        except Exception as exc:  # the store itself is gone: rank 0 (which hosts it) has died
            host = self.hosts.get(0, "host unknown")
            self.broken = f"lost contact with rank 0 ({host}): {type(exc).__name__}: {exc}".splitlines()[0]
            return Decision("failed", "FAIL", self.broken)
        if decision.missing_ranks:
            self.broken = f"{self.describe(decision.missing_ranks)} did not arrive at {tag}"
        return decision

    def _decide(self, prefix: str, tag: str, decide: DecideFn) -> Decision:
        deadline = time.monotonic() + self.deadline_s
        while ((arrived := int(self.store.add(f"{prefix}/arrived", 0))) < self.world.size
               and time.monotonic() < deadline):
            time.sleep(POLL_INTERVAL_S)
        payloads, missing = self._collect(prefix, everyone_arrived=arrived >= self.world.size)
        if not missing and self._sequence > 1:
            # Every rank has read the previous test's decision (it arrived here after it).
            self.store.delete_key(f"settle/{self._sequence - 1}/decision")
            self.store.delete_key(f"settle/{self._sequence - 1}/arrived")
        strays = sorted(r for r, p in payloads.items() if p.get("tag") != tag)
        decision = decide(payloads, missing)
        if strays:
            others = {r: payloads[r].get("tag") for r in strays}
            decision = Decision("failed", "FAIL",
                                f"ranks ran different tests at this point: {others}; every rank must run the "
                                "same tests in the same order")
        if missing:
            decision.missing_ranks = missing
            note = f"{self.describe(missing)} did not arrive within {self.deadline_s:g} s"
            decision.message = f"{note}\n{decision.message}".strip()
            decision.outcome, decision.verdict = "failed", "FAIL"
        return decision

    def _collect(self, prefix: str, everyone_arrived: bool) -> tuple[dict[int, dict[str, Any]], list[int]]:
        """Every rank's payload for one test, and the ranks that sent none."""
        keys = [f"{prefix}/{rank}" for rank in range(self.world.size)]
        if everyone_arrived and hasattr(self.store, "multi_get"):
            # Each rank sets its key before it counts itself arrived, so all N keys are there: one
            # request reads them all instead of N round trips (multi_get is in torch >= 2.5).
            values = self.store.multi_get(keys)
            return {rank: json.loads(value) for rank, value in enumerate(values)}, []
        present = [rank for rank, key in enumerate(keys) if self._has(key)]
        payloads = {rank: json.loads(self.store.get(keys[rank])) for rank in present}
        return payloads, [rank for rank in range(self.world.size) if rank not in payloads]

    def agree_to_start(self, problem: str | None) -> None:
        """Rank 0 says whether the run may start (`problem` is what only it can check, such as its
        history file); every rank learns it now. Without this a problem on rank 0 would leave the
        other ranks waiting out the deadline for a rank 0 that has already gone."""
        if self.world.rank == 0:
            self.store.set("start", json.dumps({"problem": problem}))
            if problem:
                # Rank 0 hosts the store (under tcp://): stay until every rank has read the news,
                # or a bounded while, so that they read a reason rather than a lost connection.
                deadline = time.monotonic() + min(self.deadline_s, 10.0)
                while int(self.store.add("start/read", 0)) < self.world.size - 1 and time.monotonic() < deadline:
                    time.sleep(POLL_INTERVAL_S)
                raise ClusterbenchError(problem)
            return
        self._wait_all(["start"], "waiting for rank 0 to start the run")
        problem = json.loads(self.store.get("start"))["problem"]
        self.store.add("start/read", 1)
        if problem:
            raise ClusterbenchError(f"rank 0 ({self.hosts.get(0, 'host unknown')}) cannot start the run: {problem}")

    def _await_decision(self, prefix: str) -> Decision:
        # Rank 0 may wait up to the deadline for a missing rank, then decide: allow for both.
        key = f"{prefix}/decision"
        try:
            self.store.wait([key], dt.timedelta(seconds=2 * self.deadline_s + 5))
        except Exception as exc:
            raise WorldBroken(
                f"no decision from rank 0 ({self.hosts.get(0, 'host unknown')}) within "
                f"{2 * self.deadline_s + 5:g} s: {exc}".splitlines()[0]
            ) from None
        data = json.loads(self.store.get(key))
        return Decision(data["outcome"], data["verdict"], data["message"], data["missing_ranks"])

    def leave(self) -> None:
        """Leave the world once rank 0 has written its reports.

        Launchers such as torchrun stop every rank as soon as one exits with a failure; a rank that
        finished early would otherwise get rank 0 killed before its summary and reports are out.
        """
        import torch.distributed as dist

        try:
            if self.world.rank == 0:
                self.store.set("finished", "1")
            elif not self.broken:
                self.store.wait(["finished"], dt.timedelta(seconds=self.deadline_s))
        except Exception as exc:  # rank 0 already gone: its reports are written or never will be
            log.warning("clusterbench: rank 0 did not confirm the end of the run: %s", exc)
        if not dist.is_initialized():
            return
        if self.broken:
            # Tearing down a group with dead peers can block in the backend; the process is about
            # to exit, which releases everything.
            log.warning("clusterbench: leaving the process group without teardown: %s", self.broken)
            return
        dist.destroy_process_group()


def join_world(world: World, deadline_s: float) -> Exchange:
    """Initialise torch.distributed for `world` (NCCL on GPUs, Gloo otherwise) and its exchange."""
    if not world.is_distributed:
        return SoloExchange(world)
    import torch
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    device_id = None
    if backend == "gloo":
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo" if world.master_addr.startswith("127.") else "")
        if not os.environ["GLOO_SOCKET_IFNAME"]:
            del os.environ["GLOO_SOCKET_IFNAME"]
    else:
        # The GPU of its local rank, as torchrun and srun lay ranks out.
        from clusterbench.runners.devices import bind_gpu

        device_id = bind_gpu(world.local_rank)
    timeout = dt.timedelta(seconds=deadline_s)
    try:
        # device_id binds the group to this rank's GPU (torch >= 2.3): NCCL's barrier and new groups
        # use it instead of guessing a device from the global rank, which can pick another rank's GPU
        # (a context there fails in EXCLUSIVE_PROCESS compute mode, and slows that GPU in any mode).
        if world.launcher == "torchrun":
            dist.init_process_group(backend, init_method="env://", timeout=timeout, device_id=device_id)
        else:
            dist.init_process_group(
                backend,
                init_method=f"tcp://{world.master_addr}:{world.master_port}",
                rank=world.rank,
                world_size=world.size,
                timeout=timeout,
                device_id=device_id,
            )
    except Exception as exc:
        raise ClusterbenchError(
            f"could not join the {world.size}-rank world at {world.master_addr}:{world.master_port} "
            f"({world.launcher}, {backend}) within {deadline_s:g} s: {exc}".splitlines()[0]
        ) from None
    import torch.distributed.distributed_c10d as c10d

    store = dist.PrefixStore("clusterbench", c10d._get_default_store())
    exchange = StoreExchange(world, store, backend, deadline_s)
    try:
        exchange.register_hosts()
    except WorldBroken as exc:
        raise ClusterbenchError(str(exc)) from None
    return exchange
