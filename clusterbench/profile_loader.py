"""Reading cluster profiles: a TOML file, merged with the profiles it extends, validated into a
clusterbench.profile.Profile. Every mistake is reported as one `ProfileError` line naming the file,
the place in it and what would be right.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from clusterbench.errors import ProfileError, nearest
from clusterbench.hostlist import HostlistError, expand_hostlist
from clusterbench.judge.golden import validate_golden
from clusterbench.metrics import METRICS
from clusterbench.model import PROFILE_PROVENANCES, Better, Expectation, ParamValue, Provenance
from clusterbench.probes.training.presets import PRESETS
from clusterbench.profile import (
    KNOWN_DTYPES,
    STORAGE_ENGINES,
    STORAGE_RANKS,
    ClusterInfo,
    Profile,
    ProfileFile,
    Settings,
    StorageSettings,
)
from clusterbench.profile_toml import Schema, TableReader, check_fraction, check_positive, read_toml

DEFAULT_TOLERANCE = 0.05
MAX_EXTENDS_DEPTH = 16

_CLUSTER_KEYS: Schema = {
    "name": str,
    "extends": str,
    "nodes": int,
    "accelerators_per_node": int,
    "accelerator": str,
    "description": str,
    "price_per_accelerator_hour": (int, float),
    "currency": str,
    "hosts": str,
}
_SETTINGS_KEYS: Schema = {
    "outlier_tolerance": (int, float),
    "collective_timeout_s": (int, float),
    "local_ranks": int,
    "training_preset": str,
    "training_parallel": str,
    "regression_min_effect": (int, float),
    "regression_noise_k": (int, float),
    "regression_min_runs": int,
    "regression_verdict": str,
    "burnin_s": (int, float),
    "nccl_tests_dir": str,
    "dcgm_diag_level": int,
    "second_opinion_tolerance": (int, float),
}
REGRESSION_VERDICTS = ("fail", "warn")
_EXPECT_KEYS: Schema = {
    "metric": str,
    "params": dict,
    "target": (int, float),
    "unit": str,
    "better": str,
    "tolerance": (int, float),
    "warn": (int, float),
    "provenance": str,
    "source": str,
    "required": bool,
}
_EXPECT_REQUIRED = ("metric", "target", "unit", "provenance", "source")
_STORAGE_KEYS: Schema = {
    "targets": list, "working_size_bytes": int, "engine": str, "ranks": str, "shared": list,
}
_TOP_LEVEL_KEYS = ("cluster", "settings", "golden", "storage", "expect")


TRAINING_PRESETS = ("auto", *PRESETS)
TRAINING_PARALLEL = ("ddp", "fsdp")


def _check_training(reader: TableReader, cluster: dict[str, Any], settings: dict[str, Any]) -> None:
    """The training probe's choices and the price its cost figures are computed from."""
    if "price_per_accelerator_hour" in cluster:
        check_positive(reader, "[cluster]", "price_per_accelerator_hour", cluster["price_per_accelerator_hour"])
    currency = cluster.get("currency")
    if currency is not None and not (len(currency) == 3 and currency.isascii() and currency.isupper()):
        raise reader.fail("[cluster]",
                          "'currency' must be a three-letter ISO 4217 code such as \"USD\" or "
                          f"\"EUR\", got {currency!r}")
    for key, choices in (("training_preset", TRAINING_PRESETS), ("training_parallel", TRAINING_PARALLEL)):
        if key in settings and settings[key] not in choices:
            raise reader.fail("[settings]", f"'{key}' must be one of {', '.join(choices)}, got '{settings[key]}'"
                                            f"{nearest(settings[key], choices)}")


def _parse_params(reader: TableReader, where: str, metric: str, params: dict[str, Any]) -> dict[str, ParamValue]:
    allowed = METRICS[metric].params
    for key, value in params.items():
        if key not in allowed:
            valid = ", ".join(allowed) if allowed else "none"
            raise reader.fail(where, f"unknown param '{key}' for {metric}{nearest(key, allowed)} (valid: {valid})")
        if not isinstance(value, (str, int, float, bool)):
            raise reader.fail(where, f"param '{key}' must be a string, number or boolean, got {value!r}")
        if key == "dtype" and value not in KNOWN_DTYPES:
            raise reader.fail(
                where, f"unknown dtype '{value}'{nearest(str(value), KNOWN_DTYPES)} (valid: {', '.join(KNOWN_DTYPES)})"
            )
    return dict(params)


def _parse_expectation(reader: TableReader, index: int, data: Any) -> Expectation:
    label = f"[[expect]] #{index + 1}"
    if isinstance(data, dict) and isinstance(data.get("metric"), str):
        label += f" ({data['metric']})"
    entry = reader.table(label, data, _EXPECT_KEYS)
    for key in _EXPECT_REQUIRED:
        if key not in entry:
            raise reader.fail(label, f"missing required key '{key}'")
    metric = entry["metric"]
    if metric not in METRICS:
        raise reader.fail(label, f"unknown metric '{metric}'{nearest(metric, METRICS)}")
    spec = METRICS[metric]
    if entry["unit"] != spec.unit:
        raise reader.fail(label, f"unit '{entry['unit']}' is wrong for {metric}; it is measured in '{spec.unit}'")
    better_text = entry.get("better", spec.better.value)
    if better_text not in {b.value for b in Better}:
        raise reader.fail(label, f"'better' must be 'higher' or 'lower', got '{better_text}'")
    if Better(better_text) is not spec.better:
        raise reader.fail(label,
                          f"better = '{better_text}' contradicts {metric}, which is {spec.better.value}-is-better")
    provenance = entry["provenance"]
    valid_provenances = [p.value for p in PROFILE_PROVENANCES]
    if provenance not in valid_provenances:
        raise reader.fail(
            label,
            f"provenance '{provenance}' is not one of "
            f"{', '.join(valid_provenances)}{nearest(provenance, valid_provenances)}",
        )
    if not entry["source"].strip():
        raise reader.fail(label, "'source' must say where the target comes from, got an empty string")
    target = float(entry["target"])
    check_positive(reader, label, "target", target, allow_zero=spec.better is Better.LOWER)
    tolerance = float(entry.get("tolerance", DEFAULT_TOLERANCE))
    warn = float(entry.get("warn", 0.0))
    check_fraction(reader, label, "tolerance", tolerance)
    check_fraction(reader, label, "warn", warn)
    return Expectation(
        metric=metric,
        target=target,
        unit=spec.unit,
        better=spec.better,
        tolerance=tolerance,
        warn=warn,
        provenance=Provenance(provenance),
        source=entry["source"],
        params=_parse_params(reader, label, metric, entry.get("params", {})),
        required=entry.get("required", True),
        origin=f"{reader.path} {label}",
    )


@dataclass
class _Layer:
    """One file's own contribution, before merging with what it extends."""

    cluster: dict[str, Any]
    settings: dict[str, Any]
    golden: dict[str, Any]
    storage: dict[str, Any]
    expectations: list[Expectation]
    file: ProfileFile


def _parse_layer(path: Path) -> _Layer:
    data, file = read_toml(path)
    reader = TableReader(path)
    for key in data:
        if key not in _TOP_LEVEL_KEYS:
            raise reader.fail("top level", f"unknown section '{key}'{nearest(key, _TOP_LEVEL_KEYS)}")
    cluster = reader.table("[cluster]", data.get("cluster", {}), _CLUSTER_KEYS)
    settings = reader.table("[settings]", data.get("settings", {}), _SETTINGS_KEYS)
    for key in ("nodes", "accelerators_per_node", "local_ranks"):
        for section, table in (("[cluster]", cluster), ("[settings]", settings)):
            if key in table:
                check_positive(reader, section, key, table[key], allow_zero=key == "accelerators_per_node")
    for key in ("collective_timeout_s", "burnin_s"):
        if key in settings:
            check_positive(reader, "[settings]", key, settings[key])
    if "dcgm_diag_level" in settings and settings["dcgm_diag_level"] not in (0, 1, 2, 3, 4):
        raise reader.fail("[settings]",
                          "'dcgm_diag_level' must be 0 (skip) or a dcgmi diag level 1-4, got "
                          f"{settings['dcgm_diag_level']}")
    for key in ("outlier_tolerance", "second_opinion_tolerance"):
        if key in settings:
            check_fraction(reader, "[settings]", key, settings[key])
    if "regression_min_effect" in settings:
        check_fraction(reader, "[settings]", "regression_min_effect", settings["regression_min_effect"])
    if "regression_noise_k" in settings:
        check_positive(reader, "[settings]", "regression_noise_k", settings["regression_noise_k"], allow_zero=True)
    if settings.get("regression_min_runs", 3) < 3:
        raise reader.fail("[settings]",
                          "'regression_min_runs' must be 3 or more (a spread needs several runs), got "
                          f"{settings['regression_min_runs']}")
    if settings.get("regression_verdict", "fail") not in REGRESSION_VERDICTS:
        raise reader.fail("[settings]",
                          f"'regression_verdict' must be one of {', '.join(REGRESSION_VERDICTS)}, got "
                          f"'{settings['regression_verdict']}'")
    _check_training(reader, cluster, settings)
    if "hosts" in cluster:
        try:
            expand_hostlist(cluster["hosts"])
        except HostlistError as exc:
            raise reader.fail("[cluster]", f"'hosts' is not a Slurm hostlist such as \"gpu[001-016]\": {exc}") from None
    expect = data.get("expect", [])
    if not isinstance(expect, list):
        raise reader.fail("expect", "must be an array of tables, written [[expect]]")
    expectations = [_parse_expectation(reader, i, entry) for i, entry in enumerate(expect)]
    golden = data.get("golden", {})
    if not isinstance(golden, dict):
        raise reader.fail("[golden]", "must be a table of pinned values")
    try:
        validate_golden(golden)
    except ValueError as exc:
        raise reader.fail("[golden]", str(exc)) from None
    storage = reader.table("[storage]", data.get("storage", {}), _STORAGE_KEYS)
    targets = storage.get("targets")
    if targets is not None and (not targets or not all(isinstance(t, str) and t for t in targets)):
        raise reader.fail("[storage]", "'targets' must be a non-empty array of directory paths")
    if "working_size_bytes" in storage:
        check_positive(reader, "[storage]", "working_size_bytes", storage["working_size_bytes"])
    if storage.get("ranks", "all") not in STORAGE_RANKS:
        raise reader.fail("[storage]", f"'ranks' must be one of {', '.join(STORAGE_RANKS)}, got '{storage['ranks']}'")
    if "shared" in storage and not all(isinstance(t, str) and t for t in storage["shared"]):
        raise reader.fail("[storage]", "'shared' must be an array of directory paths, each one of 'targets'")
    if storage.get("engine", "auto") not in STORAGE_ENGINES:
        raise reader.fail("[storage]",
                          f"'engine' must be one of {', '.join(STORAGE_ENGINES)}, got '{storage['engine']}'")
    return _Layer(cluster, settings, golden, storage, expectations, file)


def _merge_expectations(base: list[Expectation], override: list[Expectation]) -> list[Expectation]:
    """A child's expectation replaces the parent's on the same metric and params; others are kept."""

    def key(e: Expectation) -> tuple[str, tuple[tuple[str, ParamValue], ...]]:
        return e.metric, tuple(sorted(e.params.items()))

    replaced = {key(e) for e in override}
    return [e for e in base if key(e) not in replaced] + list(override)


ProfileResolver = Callable[[str, Path], Path]


def load_profile_file(path: Path, resolve_extends: ProfileResolver) -> Profile:
    """Load `path` and everything it extends; `resolve_extends(name, from_file)` finds a parent."""
    layers: list[_Layer] = []
    seen: list[Path] = []
    current: Path | None = path
    while current is not None:
        resolved = current.resolve()
        if resolved in seen:
            chain = " -> ".join(str(p) for p in [*seen, resolved])
            raise ProfileError(f"{path}: 'extends' forms a cycle: {chain}")
        if len(seen) >= MAX_EXTENDS_DEPTH:
            raise ProfileError(f"{path}: 'extends' chain is deeper than {MAX_EXTENDS_DEPTH} profiles")
        seen.append(resolved)
        layer = _parse_layer(current)
        layers.append(layer)
        parent = layer.cluster.get("extends")
        current = resolve_extends(parent, current) if parent else None

    cluster: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    golden: dict[str, Any] = {}
    storage: dict[str, Any] = {}
    expectations: list[Expectation] = []
    for layer in reversed(layers):  # the most basic profile first, each child overriding it
        cluster.update(layer.cluster)
        settings.update(layer.settings)
        golden.update(layer.golden)
        storage.update(layer.storage)
        expectations = _merge_expectations(expectations, layer.expectations)
    cluster.pop("extends", None)
    if "name" not in cluster:
        raise ProfileError(f"{path}: [cluster]: missing required key 'name'")
    info = _with_host_count(ClusterInfo(**cluster), _nodes_stated_with_hosts(layers), path)
    if info.price_per_accelerator_hour is not None and not info.currency:
        raise ProfileError(f"{path}: [cluster]: 'price_per_accelerator_hour' needs its "
                           "'currency', e.g. currency = \"USD\"")
    return Profile(
        cluster=info,
        settings=Settings(**settings),
        expectations=tuple(expectations) + _gpu_count_expectation(info, expectations, path),
        files=tuple(layer.file for layer in layers),
        golden=golden,
        storage=_storage_settings(storage, path),
    )


def _nodes_stated_with_hosts(layers: list[_Layer]) -> bool:
    """True when 'nodes' is set by the file that sets 'hosts' or by one extending it (layers run
    child first): a parent's nodes = 1 ("one node" of hardware) must not contradict a child's host list."""
    hosts_at = next((i for i, layer in enumerate(layers) if "hosts" in layer.cluster), None)
    nodes_at = next((i for i, layer in enumerate(layers) if "nodes" in layer.cluster), None)
    return hosts_at is not None and nodes_at is not None and nodes_at <= hosts_at


def _with_host_count(info: ClusterInfo, nodes_stated: bool, path: Path) -> ClusterInfo:
    """A host list states the node count too: `nodes` defaults to its length, and must not contradict it."""
    named = len(info.host_names())
    if not named:
        return info
    if not nodes_stated:
        return replace(info, nodes=named)
    if info.nodes != named:
        raise ProfileError(
            f"{path}: [cluster]: 'hosts' names {named} host{'s' if named != 1 else ''} but 'nodes' = {info.nodes};"
            " make them agree (or leave 'nodes' out: it defaults to the number of hosts)"
        )
    return info


def _storage_settings(storage: dict[str, Any], path: Path) -> StorageSettings:
    """[storage] of the merged chain; `shared` may only name targets, which a parent may have set."""
    fields: dict[str, Any] = {**storage, **{k: tuple(storage[k]) for k in ("targets", "shared") if k in storage}}
    settings = StorageSettings(**fields)
    strangers = [t for t in settings.shared if t not in settings.targets]
    if strangers:
        raise ProfileError(
            f"{path}: [storage]: 'shared' names {', '.join(strangers)}, which is not among the targets "
            f"({', '.join(settings.targets)}); list it in 'targets' too"
        )
    return settings


def _gpu_count_expectation(info: ClusterInfo, stated: list[Expectation], path: Path) -> tuple[Expectation, ...]:
    """A profile that says its nodes have accelerators expects that many GPUs on every node, unless
    it states its own gpu.count expectation: a missing GPU then fails, and so does a node without
    NVML, while a CPU profile (accelerators_per_node = 0) expects nothing."""
    if info.accelerators_per_node <= 0 or any(e.metric == "gpu.count" for e in stated):
        return ()
    return (
        Expectation(
            metric="gpu.count",
            target=float(info.accelerators_per_node),
            unit=METRICS["gpu.count"].unit,
            better=Better.HIGHER,
            tolerance=0.0,
            warn=0.0,
            provenance=Provenance.SPEC,
            source=f"[cluster] accelerators_per_node = {info.accelerators_per_node} ({info.accelerator})",
            origin=f"{path} [cluster]",
        ),
    )
