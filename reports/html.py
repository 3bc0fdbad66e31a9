"""report.html: one self-contained page (styles and SVG plots inline, nothing fetched) that says
whether the cluster passed, what failed, where, by how much, and how it scales.

Rendered by jinja2 with autoescaping on, so every name that came from a machine or a profile (host,
device, path, cluster, error message) is escaped; only matplotlib's SVG output is inserted as markup.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import jinja2

from clusterbench.reports.bad_nodes import service_commands
from clusterbench.reports.overview import Overview
from clusterbench.reports.sections import (
    FamilySection,
    Plot,
    ScalingView,
    family_sections,
    scaling_views,
    trend_plots,
)
from clusterbench.results import RunResults

TEMPLATES = Path(__file__).parent / "templates"
MAX_LISTED_HOSTS = 24
MAX_PROBLEM_ROWS = 100
MAX_STRAGGLER_ROWS = 50
MAX_BLAMED_ROWS = 50


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template, whatever its name: nothing from a machine reaches the page raw
        undefined=jinja2.StrictUndefined,  # a template typo fails the render instead of printing nothing
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = lambda value: "-" if value is None else f"{value:.1%}"
    return env


def _duration(started: str, finished: str | None) -> str:
    if not finished:
        return "unfinished"
    try:
        seconds = (dt.datetime.fromisoformat(finished) - dt.datetime.fromisoformat(started)).total_seconds()
    except ValueError:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def render_html(results: RunResults, overview: Overview) -> str:
    families: list[FamilySection] = family_sections(results, overview.stragglers)
    scaling: list[ScalingView] = scaling_views(results)
    trends: list[Plot] = trend_plots(results.trends)
    template = _environment().get_template("report.html.j2")
    slurm, kubernetes = service_commands(overview.bad_nodes[:MAX_BLAMED_ROWS])
    return template.render(
        service={"slurm": slurm, "kubernetes": kubernetes},
        o=overview,
        run=results.run,
        families=families,
        scaling=scaling,
        trends=trends,
        tests=results.tests,
        duration=_duration(overview.started_at, overview.finished_at),
        limits={
            "hosts": MAX_LISTED_HOSTS,
            "problems": MAX_PROBLEM_ROWS,
            "stragglers": MAX_STRAGGLER_ROWS,
            "blamed": MAX_BLAMED_ROWS,
        },
    )
