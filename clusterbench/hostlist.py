"""Slurm hostlist expressions, expanded to host names: "gpu[001-016]", "a[1-2]b[3,5]", "n1,n[4-5]".

The syntax is Slurm's (scontrol show hostnames): comma-separated names, each of which may hold
bracket groups of comma-separated numbers and ranges; a range keeps the zero padding of its lower
bound ("[08-10]" gives 08, 09, 10). Several groups in one name expand to every combination, in
order. Written here rather than by calling scontrol, which is absent on the machine that validates
a profile and on Kubernetes.
"""

from __future__ import annotations

import itertools
import re

MAX_HOSTS = 1_000_000  # a typo such as [1-100000000] must fail, not fill memory


class HostlistError(ValueError):
    """A malformed hostlist expression; the message says what is wrong and where."""


def _split_top_level(expression: str) -> list[str]:
    """The comma-separated names of `expression`, ignoring commas inside brackets."""
    names, depth, start = [], 0, 0
    for index, char in enumerate(expression):
        if char == "[":
            if depth:
                raise HostlistError(f"nested '[' at character {index + 1} of {expression!r}")
            depth = 1
        elif char == "]":
            if not depth:
                raise HostlistError(f"']' without '[' at character {index + 1} of {expression!r}")
            depth = 0
        elif char == "," and not depth:
            names.append(expression[start:index])
            start = index + 1
    if depth:
        raise HostlistError(f"'[' is never closed in {expression!r}")
    names.append(expression[start:])
    return names


_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def _expand_group(group: str, name: str) -> list[str]:
    """The numbers of one bracket group ("001-003,7"), as strings with their padding."""
    values: list[str] = []
    for part in group.split(","):
        match = _RANGE.match(part.strip())
        if not match:
            raise HostlistError(f"'[{group}]' in {name!r}: '{part}' is not a number or a range such as 01-16")
        low_text, high_text = match.group(1), match.group(2)
        if high_text is None:
            values.append(low_text)
            continue
        low, high = int(low_text), int(high_text)
        if high < low:
            raise HostlistError(f"'[{group}]' in {name!r}: range {part} runs backwards")
        if high - low + 1 > MAX_HOSTS:
            raise HostlistError(f"'[{group}]' in {name!r}: range {part} names more than {MAX_HOSTS} hosts")
        width = len(low_text)  # Slurm pads to the lower bound's width: [8-10] is 8, 9, 10; [08-10] is 08, 09, 10
        values.extend(str(n).zfill(width) for n in range(low, high + 1))
    return values


def _expand_name(name: str) -> list[str]:
    pieces = re.split(r"\[([^\]]*)\]", name)  # literal, group, literal, group, ..., literal
    choices: list[list[str]] = []
    for index, piece in enumerate(pieces):
        choices.append(_expand_group(piece, name) if index % 2 else [piece])
    count = 1
    for options in choices:
        count *= len(options)
    if count > MAX_HOSTS:
        raise HostlistError(f"{name!r} names more than {MAX_HOSTS} hosts")
    return ["".join(parts) for parts in itertools.product(*choices)]


def expand_hostlist(expression: str) -> list[str]:
    """Every host name of a Slurm hostlist expression, in order, duplicates dropped.

    Raises HostlistError (one line) on an empty or malformed expression."""
    if not expression.strip():
        raise HostlistError("the hostlist is empty")
    hosts: list[str] = []
    for name in _split_top_level(expression):
        name = name.strip()
        if not name:
            raise HostlistError(f"empty host name in {expression!r} (two commas in a row, or one at an end)")
        if any(c.isspace() for c in name):
            raise HostlistError(f"host name {name!r} in {expression!r} contains white space")
        hosts.extend(_expand_name(name))
    return list(dict.fromkeys(hosts))


def short_name(host: str) -> str:
    """The host name without its domain: Slurm names nodes 'gpu001' where the host says 'gpu001.example.org'."""
    return host.split(".", 1)[0]
