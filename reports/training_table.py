"""The scaling run as one text table, a row per group size, from its Measurements."""

from __future__ import annotations

from collections.abc import Sequence

from clusterbench.model import Measurement

_COLUMNS = ("ranks", "span", "step ms", "p90 ms", "data ms", "comm ms", "tokens/s", "tok/s/dev", "effic.",
            "MFU", "cost/Mtok", "loss first>last", "#diff")
_WIDTHS = (5, 10, 9, 9, 8, 8, 11, 10, 7, 7, 10, 16, 5)


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _value(figures: dict[str, Measurement], metric: str) -> float | None:
    return figures[metric].value if metric in figures else None


def render_scaling_table(measurements: list[Measurement], *, title: str, footer: Sequence[str] = ()) -> str:
    rows: dict[tuple[int, str], dict[str, Measurement]] = {}
    for m in measurements:
        rows.setdefault((int(m.params["ranks"]), str(m.params["span"])), {})[m.metric] = m
    lines = [f"# {title}", "#" + "".join(c.rjust(w + 1) for c, w in zip(_COLUMNS, _WIDTHS))]
    for (ranks, span), figures in sorted(rows.items()):
        step = figures.get("train.step_time_ms")
        tokens = figures.get("train.tokens_per_s")
        loss = figures.get("train.loss_drop")
        details = step.details if step else {}
        losses = f"{loss.samples[0]:.3f}>{loss.samples[-1]:.3f}" if loss and loss.samples else "-"
        cells = (
            str(ranks), span,
            _cell(step.value if step else None, ".2f"),
            _cell(details.get("p90_ms"), ".2f"),
            _cell((details.get("data_ms") or {}).get("median"), ".3f"),
            _cell(details.get("exposed_communication_ms"), ".2f"),
            _cell(tokens.value if tokens else None, ".0f"),
            _cell(tokens.details.get("tokens_per_s_per_device") if tokens else None, ".0f"),
            _cell(_value(figures, "train.scaling_efficiency"), ".3f"),
            _cell(_value(figures, "train.mfu"), ".3f"),
            _cell(_value(figures, "train.cost_per_mtokens"), ".4g"),
            losses,
            _cell(_value(figures, "train.params_mismatched"), ".0f"),
        )
        lines.append(" " + "".join(c.rjust(w + 1) for c, w in zip(cells, _WIDTHS)))
    lines += [f"# {line}" for line in footer]
    return "\n".join(lines)
