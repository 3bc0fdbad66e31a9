"""Progress of long sweeps on rank 0: a rich progress bar in a terminal, one plain line per finished
step in a log (CI), so a network phase that takes minutes shows where it is.

The plugin creates one reporter on rank 0 (`install`); glue code such as clusterbench.runners.collectives
asks for `current()` and hands the probes a plain callback (`step_callback`): probes know nothing
of rich or pytest. Where none is installed (other ranks, a script using the probes), `current()` is None.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress

StepCallback = Callable[[int, int, str], None]  # (steps done, steps in all, what the last step measured)


@dataclass(frozen=True)
class Step:
    task: str  # e.g. "all_reduce out-of-place"
    done: int
    total: int
    detail: str  # e.g. "16777216 B: busbw 0.90 GB/s"

    def line(self) -> str:
        return f"clusterbench: {self.task} {self.done}/{self.total}: {self.detail}"


class StepSink:
    """Whatever takes finished steps; `step_callback` turns it into the plain callable probes take."""

    def step(self, step: Step) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Take down whatever the sink shows (a bar still on screen): nothing, unless it shows one."""

    def step_callback(self, task: str) -> StepCallback:
        """A plain callable for a probe: it reports each finished step of `task`."""
        return lambda done, total, detail: self.step(Step(task, done, total, detail))


class ForwardingReporter(StepSink):
    """Sends each step to another process: local rank 0 to the pytest process that started it, whose
    reporter shows it (the ranks clusterbench starts itself have no terminal of their own)."""

    def __init__(self, send: Callable[[Step], None]):
        self._send = send

    def step(self, step: Step) -> None:
        self._send(step)


class ProgressReporter(StepSink):
    """Writes steps to `stream`: through rich.progress where `tty`, else as one line each."""

    def __init__(self, stream: IO[str], *, tty: bool):
        self.stream = stream
        self.tty = tty
        self._progress: Progress | None = None
        self._tasks: dict[str, int] = {}

    def step(self, step: Step) -> None:
        if not self.tty:
            # A task's first line starts a line of its own: pytest's progress ("test_network.py ") may
            # be mid-line, and this stream cannot see where its cursor is.
            first = step.task not in self._tasks
            self._tasks.setdefault(step.task, 0)
            self.stream.write(("\n" if first else "") + step.line() + "\n")
            self.stream.flush()
            return
        progress = self._rich()
        if step.task not in self._tasks:
            self._tasks[step.task] = progress.add_task(step.task, total=step.total)
        progress.update(self._tasks[step.task], completed=step.done, description=f"{step.task}: {step.detail}")
        if step.done >= step.total:
            self._close_bar()

    def _rich(self):
        if self._progress is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            console = Console(file=self.stream, force_terminal=True)
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), console=console, transient=True)
            self._progress.start()
        return self._progress

    def _close_bar(self) -> None:
        """A finished sweep's bar goes away (its table follows when the test ends)."""
        if self._progress is not None and all(t.finished for t in self._progress.tasks):
            self._progress.stop()
            self._progress = None
            self._tasks.clear()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


_current: StepSink | None = None


def install(reporter: StepSink | None) -> None:
    """Make `reporter` the one `current()` returns (None: no progress is shown)."""
    global _current
    _current = reporter


def current() -> StepSink | None:
    return _current


def callback_for(task: str) -> StepCallback | None:
    """The callback a probe takes for `task`'s steps where this process shows progress (rank 0 of a
    launcher's world, local rank 0, the pytest process); None elsewhere, so the probe skips it."""
    return _current.step_callback(task) if _current is not None else None
