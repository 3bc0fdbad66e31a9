"""Figures in words, as every check message and report shows them."""

from __future__ import annotations


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    magnitude = abs(value)
    text = f"{value:.0f}" if magnitude >= 1000 else f"{value:.3g}" if magnitude < 10 else f"{value:.1f}"
    return f"{text} {unit}"
