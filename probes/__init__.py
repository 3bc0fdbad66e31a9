"""Measurement, installed as clusterbench.probes: each probe measures and returns plain data.

Importable only under that name. From the checkout root the folder is also reachable as a top-level
`probes` package, which would load each module a second time as a distinct object (its own classes,
caches and registries), so that name is refused rather than half-working.
"""

if __name__ == "probes":
    raise ImportError("probes/ is the package clusterbench.probes: import clusterbench.probes and its modules")
