"""A profile's TOML document, read and checked table by table against a schema of key -> type, each
mistake raised as one `ProfileError` line that names the file and the place in it."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import tomllib

from clusterbench.errors import ProfileError, nearest, read_bytes
from clusterbench.profile import ProfileFile

# A table's schema: each key it may hold and the type (or types) its value must have.
Schema = dict[str, type | tuple[type, ...]]

TYPE_NAMES = {
    str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a table", list: "an array",
}


def type_name(expected: type | tuple[type, ...]) -> str:
    if isinstance(expected, tuple):
        return "a number" if float in expected else " or ".join(TYPE_NAMES[t] for t in expected)
    return TYPE_NAMES[expected]


def is_instance(value: Any, expected: type | tuple[type, ...]) -> bool:
    # TOML booleans are Python ints; never accept true/false where a number is meant.
    if isinstance(value, bool) and expected is not bool:
        return False
    return isinstance(value, expected)


class TableReader:
    """Validates one parsed TOML document, prefixing every error with where it is."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, problem: str) -> ProfileError:
        return ProfileError(f"{self.path}: {where}: {problem}")

    def table(self, where: str, data: Any, schema: Schema) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(where, f"must be a table, got {type(data).__name__}")
        for key, value in data.items():
            if key not in schema:
                raise self.fail(where, f"unknown key '{key}'{nearest(key, schema)}")
            if not is_instance(value, schema[key]):
                raise self.fail(
                    where, f"'{key}' must be {type_name(schema[key])}, got {value!r} ({type(value).__name__})"
                )
        return data


def read_toml(path: Path) -> tuple[dict[str, Any], ProfileFile]:
    raw = read_bytes(path, ProfileError, missing="profile file not found",
                     directory="is a directory, expected a TOML profile file", unreadable="cannot read profile")
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError:
        raise ProfileError(f"{path}: not a UTF-8 text file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: invalid TOML: {exc}") from None
    return data, ProfileFile(str(path), hashlib.sha256(raw).hexdigest(), text)


def check_positive(reader: TableReader, where: str, key: str, value: float, *, allow_zero: bool = False) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise reader.fail(where, f"'{key}' must be a finite number, got {value}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "greater than zero"
        raise reader.fail(where, f"'{key}' must be {bound}, got {value}")


def check_fraction(reader: TableReader, where: str, key: str, value: float) -> None:
    if not (0 <= value < 1) or not math.isfinite(value):
        raise reader.fail(where, f"'{key}' is a fraction of the target and must be in [0, 1), got {value}")
