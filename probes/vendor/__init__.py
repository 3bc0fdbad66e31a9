"""The real tools as second opinions: perftest's ib_write_bw, nccl-tests' *_perf binaries, DCGM's diagnostic.

Each module parses its tool's own output (the text people paste into issues, not a re-implementation)
and runs the tool where it is installed. A tool is looked up when it is needed, never at import: a
node without it gets NOT MEASURED naming the tool, not an import error.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from clusterbench.model import NotMeasured, ProbeFailed


@dataclass(frozen=True)
class ToolRun:
    """What one run of a vendor tool returned."""

    command: list[str]
    returncode: int
    stdout: str
    stderr: str

    def last_line(self) -> str:
        """The last non-empty line of stderr, else of stdout: where these tools say what went wrong."""
        for text in (self.stderr, self.stdout):
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if lines:
                return lines[-1]
        return f"exit status {self.returncode}, no output"


def find_tool(name: str, *, directories: Iterable[str | Path] = (), install_hint: str = "") -> str:
    """The path of executable `name`: in one of `directories` first (a site's build folder), else on PATH."""
    for directory in directories:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        where = ", ".join(str(d) for d in directories)
        hint = f"; {install_hint}" if install_hint else ""
        raise NotMeasured(f"{name} is not installed (not on PATH{f' nor in {where}' if where else ''}){hint}")
    return found


def start_tool(command: Sequence[str]) -> subprocess.Popen[str]:
    """Start a tool in a process group of its own, so that a timeout can end it and anything it forked."""
    return subprocess.Popen(list(command), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def finish_tool(process: subprocess.Popen[str], command: Sequence[str], timeout_s: float) -> ToolRun:
    """Wait for a started tool; past `timeout_s` (or on Ctrl-C) its process group is killed and a
    timeout is a ProbeFailed naming the command."""
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        if isinstance(exc, subprocess.TimeoutExpired):
            raise ProbeFailed(f"{shlex.join(command)} did not finish within {timeout_s:g} s") from None
        raise
    return ToolRun(list(command), process.returncode, stdout, stderr)


def run_tool(command: Sequence[str], timeout_s: float) -> ToolRun:
    return finish_tool(start_tool(command), command, timeout_s)
