"""Rendering, installed as clusterbench.reports: reports render measurements and checks (docs/reports.md).

Importable only under that name. From the checkout root the folder is also reachable as a top-level
`reports` package, which would load each module a second time as a distinct object (its own classes,
so isinstance checks across the two copies fail), so that name is refused rather than half-working.
"""

if __name__ == "reports":
    raise ImportError("reports/ is the package clusterbench.reports: import clusterbench.reports and its modules")
