"""The accelerator hardware table: spec-sheet peaks and published achievable fractions, with sources.

The figures live in a data file, clusterbench/data/hardware.toml, so that people can check and
correct them without reading code; this module reads that file, validates it and turns it into
typed, frozen `AcceleratorSpec`s. Every number carries the document it came from, because an
expectation derived from it must say on what authority it stands. A figure that is not published
is absent from the file and `None` here: nothing is guessed.

`match_accelerator` maps the name a device reports (torch.cuda.get_device_name) to its entry. A MIG
slice ("NVIDIA H100 80GB HBM3 MIG 3g.40gb") is a fraction of the GPU its name starts with: no
whole-GPU entry claims it, so no spec-derived expectation is made for it.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pyproject installs tomli there
    import tomli as tomllib  # type: ignore[no-redef]

from clusterbench.errors import ClusterbenchError, nearest

# Dtypes the table may state a peak or a GEMM fraction for, dense only.
KNOWN_DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8")
PACKAGED_TABLE = "clusterbench/data/hardware.toml"  # how errors name the packaged file

_SOURCES_TABLE = "sources"
_ENTRY_KEYS = ("name", "match", "exclude", "notes", "peak_tflops", "memory", "links", "achievable")
_MEMORY_KEYS = ("size_gb", "bandwidth_gbps")
_LINK_KEYS = ("scaleup_gbps", "host_pcie_gen", "host_gbps")
_ACHIEVABLE_KEYS = tuple(f"gemm_{d}" for d in KNOWN_DTYPES) + ("memory_copy", "scaleup_copy", "h2d")
_FIGURE_KEYS = ("value", "source", "note")
_PCIE_GENS = (3, 4, 5, 6)
# How a MIG slice names itself after its GPU's name: "MIG 3g.40gb", "MIG 1g.10gb+me", "MIG 7g.80gb".
_MIG_NAME = re.compile(r"\bMIG\b", re.IGNORECASE)


def mig_profile(device_name: str) -> str | None:
    """The MIG profile in a device name ("MIG 3g.40gb"), or None for a whole GPU."""
    match = _MIG_NAME.search(device_name)
    return device_name[match.start():].strip() if match else None


class HardwareTableError(ClusterbenchError, ValueError):
    """A hardware table that cannot be read or is wrong; the message is one line naming the file,
    the entry and the field."""


@dataclass(frozen=True)
class SourcedFigure:
    """One published number and the document it came from."""

    value: float
    source: str  # the document and table, with any @alias already expanded
    note: str = ""  # the raw published numbers or a caveat, for humans

    @property
    def citation(self) -> str:
        return f"{self.source} ({self.note})" if self.note else self.source

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "source": self.source, "note": self.note}


@dataclass(frozen=True)
class AcceleratorSpec:
    """One accelerator model. Figures not published are None (or absent from the dicts)."""

    key: str
    name: str
    match: tuple[str, ...]  # regexes searched case-insensitively in the device name
    exclude: tuple[str, ...] = ()  # regexes that veto a match
    peak_tflops: Mapping[str, SourcedFigure] = field(default_factory=dict)  # dense, by dtype
    memory_gb: SourcedFigure | None = None
    memory_bandwidth_gbps: SourcedFigure | None = None
    scaleup_link_gbps: SourcedFigure | None = None  # NVLink/xGMI, one direction
    host_pcie_gen: SourcedFigure | None = None
    host_link_gbps: SourcedFigure | None = None  # PCIe x16, one direction
    achievable_gemm_fraction: Mapping[str, SourcedFigure] = field(default_factory=dict)  # by dtype
    achievable_copy_fraction: SourcedFigure | None = None  # HBM copy, bytes read + written
    achievable_scaleup_fraction: SourcedFigure | None = None  # peer copy over the scale-up link
    achievable_h2d_fraction: SourcedFigure | None = None  # pinned host-to-device copy
    notes: str = ""

    def matches(self, device_name: str) -> bool:
        """True when `device_name` is this accelerator by the table's match/exclude patterns.

        A MIG slice has a fraction of the GPU's SMs, memory and bandwidth, so an entry for the
        whole GPU never claims it; only an entry whose own patterns name MIG could."""
        if mig_profile(device_name) and not any("MIG" in p.upper() for p in self.match):
            return False
        hit = any(re.search(p, device_name, re.IGNORECASE) for p in self.match)
        return hit and not any(re.search(p, device_name, re.IGNORECASE) for p in self.exclude)

    def peak(self, dtype: str) -> float | None:
        """Dense peak TFLOP/s for `dtype`, or None when the table has none."""
        figure = self.peak_tflops.get(dtype)
        return figure.value if figure else None

    def achievable_gemm_tflops(self, dtype: str) -> float | None:
        """Published achievable fraction times this table's peak, or None when either is missing.

        The fraction is the one published against the publisher's spec figure, which can differ
        slightly from this table's peak (MI300X: 1300 vs 1307.4); see the figure's note.
        """
        fraction, peak = self.achievable_gemm_fraction.get(dtype), self.peak(dtype)
        return fraction.value * peak if fraction and peak is not None else None

    def figures(self) -> dict[str, SourcedFigure]:
        """Every figure this entry states, by a dotted name (peak_tflops.bf16, memory_gb, ...)."""
        out = {f"peak_tflops.{d}": f for d, f in self.peak_tflops.items()}
        out.update({f"achievable_gemm_fraction.{d}": f for d, f in self.achievable_gemm_fraction.items()})
        for name in (
            "memory_gb", "memory_bandwidth_gbps", "scaleup_link_gbps", "host_pcie_gen", "host_link_gbps",
            "achievable_copy_fraction", "achievable_scaleup_fraction", "achievable_h2d_fraction",
        ):
            figure = getattr(self, name)
            if figure is not None:
                out[name] = figure
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "match": list(self.match),
            "exclude": list(self.exclude),
            "notes": self.notes,
            "figures": {k: f.to_json() for k, f in self.figures().items()},
        }


def load_hardware_table(path: str | os.PathLike[str] | None = None) -> dict[str, AcceleratorSpec]:
    """Read and validate a hardware table; the packaged one when `path` is None.

    Returns the entries by key, in file order. Raises HardwareTableError on any defect.
    """
    if path is None:
        label = PACKAGED_TABLE
        try:
            text = resources.files("clusterbench").joinpath("data/hardware.toml").read_text(encoding="utf-8")
        except OSError as exc:
            raise HardwareTableError(f"{label}: cannot read the packaged hardware table: {exc}") from None
    else:
        label = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise HardwareTableError(f"{label}: cannot read hardware table: {exc.strerror or exc}") from None
    return parse_hardware_table(text, label)


def parse_hardware_table(text: str, label: str = "<hardware table>") -> dict[str, AcceleratorSpec]:
    """Validate TOML `text` as a hardware table; `label` names it in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise HardwareTableError(f"{label}: not valid TOML: {exc}") from None
    return _Reader(label).table(data)


def match_accelerator(
    device_name: str, table: Mapping[str, AcceleratorSpec] | None = None
) -> AcceleratorSpec | None:
    """The entry whose patterns claim `device_name`, or None for a device the table does not know.

    Two entries claiming one name is a defect of the table, not a guess to make: it raises
    HardwareTableError naming both.
    """
    specs = load_hardware_table() if table is None else table
    hits = [spec for spec in specs.values() if spec.matches(device_name)]
    if len(hits) > 1:
        keys = ", ".join(s.key for s in hits)
        raise HardwareTableError(f"hardware table: device name '{device_name}' is claimed by several entries ({keys}); "
                                 "tighten their match/exclude patterns")
    return hits[0] if hits else None


class _Reader:
    """Walks the parsed TOML, building specs and raising one-line errors that name the place."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.sources: dict[str, str] = {}

    def fail(self, where: str, problem: str) -> HardwareTableError:
        place = f" [{where}]" if where else ""
        return HardwareTableError(f"{self.label}:{place} {problem}")

    def table(self, data: dict[str, Any]) -> dict[str, AcceleratorSpec]:
        sources = data.get(_SOURCES_TABLE, {})
        if not isinstance(sources, dict):
            raise self.fail(_SOURCES_TABLE, "must be a table of name = \"citation\"")
        for name, citation in sources.items():
            if not isinstance(citation, str) or not citation.strip():
                raise self.fail(f"{_SOURCES_TABLE}.{name}", "must be a non-empty citation string")
        self.sources = dict(sources)

        specs: dict[str, AcceleratorSpec] = {}
        for key, entry in data.items():
            if key == _SOURCES_TABLE:
                continue
            if not isinstance(entry, dict):
                raise self.fail(key, f"top-level key must be an accelerator table like [{key}], got {_kind(entry)}")
            specs[key] = self.entry(key, entry)
        if not specs:
            raise self.fail("", "the table names no accelerator")
        return specs

    def entry(self, key: str, entry: dict[str, Any]) -> AcceleratorSpec:
        self.known_keys(key, entry, _ENTRY_KEYS)
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise self.fail(f"{key}.name", "is required: the display name, e.g. name = \"H100 SXM\"")
        match = self.patterns(key, "match", entry.get("match"), required=True)
        exclude = self.patterns(key, "exclude", entry.get("exclude", []), required=False)
        notes = entry.get("notes", "")
        if not isinstance(notes, str):
            raise self.fail(f"{key}.notes", f"must be a string, got {_kind(notes)}")

        peaks = self.section(key, entry, "peak_tflops", KNOWN_DTYPES, what="dtype")
        memory = self.section(key, entry, "memory", _MEMORY_KEYS)
        links = self.section(key, entry, "links", _LINK_KEYS)
        achievable = self.section(key, entry, "achievable", _ACHIEVABLE_KEYS, fraction=True)

        gen = links.get("host_pcie_gen")
        if gen is not None and gen.value not in _PCIE_GENS:
            raise self.fail(f"{key}.links.host_pcie_gen", f"must be a PCIe generation {_PCIE_GENS}, got {gen.value:g}")
        gemm = {k.removeprefix("gemm_"): f for k, f in achievable.items() if k.startswith("gemm_")}
        for dtype in gemm:
            if dtype not in peaks:
                raise self.fail(f"{key}.achievable.gemm_{dtype}",
                                f"a GEMM fraction needs a peak to be a fraction of; add [{key}.peak_tflops] {dtype}")
        return AcceleratorSpec(
            key=key,
            name=name.strip(),
            match=match,
            exclude=exclude,
            peak_tflops=peaks,
            memory_gb=memory.get("size_gb"),
            memory_bandwidth_gbps=memory.get("bandwidth_gbps"),
            scaleup_link_gbps=links.get("scaleup_gbps"),
            host_pcie_gen=gen,
            host_link_gbps=links.get("host_gbps"),
            achievable_gemm_fraction=gemm,
            achievable_copy_fraction=achievable.get("memory_copy"),
            achievable_scaleup_fraction=achievable.get("scaleup_copy"),
            achievable_h2d_fraction=achievable.get("h2d"),
            notes=notes.strip(),
        )

    def patterns(self, key: str, field_name: str, value: Any, required: bool) -> tuple[str, ...]:
        where = f"{key}.{field_name}"
        if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
            raise self.fail(where, "must be a list of regex strings, e.g. ['\\bH100\\b.*\\bHBM3\\b']")
        if required and not value:
            raise self.fail(where, "must name at least one device-name pattern")
        for pattern in value:
            try:
                re.compile(pattern, re.IGNORECASE)
            except re.error as exc:
                raise self.fail(where, f"pattern '{pattern}' is not a valid regex: {exc}") from None
        return tuple(value)

    def section(
        self, key: str, entry: dict[str, Any], name: str, allowed: tuple[str, ...],
        what: str = "key", fraction: bool = False,
    ) -> dict[str, SourcedFigure]:
        where = f"{key}.{name}"
        table = entry.get(name, {})
        if not isinstance(table, dict):
            raise self.fail(where, f"must be a table, got {_kind(table)}")
        figures = {}
        for item, raw in table.items():
            if item not in allowed:
                raise self.fail(f"{where}.{item}",
                                f"unknown {what} '{item}'{nearest(item, allowed)} (known: {', '.join(allowed)})")
            figures[item] = self.figure(f"{where}.{item}", raw, fraction)
        return figures

    def figure(self, where: str, raw: Any, fraction: bool) -> SourcedFigure:
        if not isinstance(raw, dict):
            raise self.fail(where, f"must be {{ value = ..., source = \"...\" }}, got {_kind(raw)}")
        self.known_keys(where, raw, _FIGURE_KEYS)
        value = raw.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(where, f"value must be a number, got {_kind(value)}")
        if not math.isfinite(value) or value <= 0:
            raise self.fail(where, f"value must be positive, got {value}")
        if fraction and value > 1:
            raise self.fail(where, f"value is a fraction of spec and must be in (0, 1], got {value}")
        source = raw.get("source")
        if not isinstance(source, str) or not source.strip():
            raise self.fail(where, "has no source: every figure names the document it came from, source = \"...\"")
        source = source.strip()
        if source.startswith("@"):
            alias = source[1:]
            if alias not in self.sources:
                raise self.fail(where, f"source '{source}' is not in [{_SOURCES_TABLE}]{nearest(alias, self.sources)}")
            source = self.sources[alias].strip()
        note = raw.get("note", "")
        if not isinstance(note, str):
            raise self.fail(where, f"note must be a string, got {_kind(note)}")
        return SourcedFigure(value=float(value), source=source, note=note.strip())

    def known_keys(self, where: str, table: dict[str, Any], allowed: tuple[str, ...]) -> None:
        for item in table:
            if item not in allowed:
                raise self.fail(f"{where}.{item}",
                                f"unknown field '{item}'{nearest(item, allowed)} (known: {', '.join(allowed)})")


def _kind(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"
