"""Checks of the job against the profile's [cluster]: the nodes and hosts it was meant to span."""

from __future__ import annotations

from clusterbench.hostlist import short_name
from clusterbench.model import Better, Check, Provenance, Verdict

CLUSTER_NODES_METRIC = "cluster.nodes"  # node accounting: the job spans the profile's nodes
CLUSTER_HOSTS_METRIC = "cluster.hosts"  # and every host the profile names


def _named(hosts: list[str], limit: int = 20) -> str:
    shown = ", ".join(hosts[:limit])
    return shown + (f" and {len(hosts) - limit} more" if len(hosts) > limit else "")


def judge_cluster(nodes: int, named_hosts: list[str], seen_hosts: list[str], source: str) -> list[Check]:
    """The job against the profile's [cluster]: FAIL when it spans fewer than `nodes` nodes or misses
    a host of `named_hosts` (naming them), WARN when it ran on hosts the list does not name.

    A 16-node acceptance launched on 15 nodes by mistake must not pass. Hosts are compared by short
    name (Slurm's 'gpu001' is the host's 'gpu001.example.org'). More nodes than `nodes` is no fault:
    a one-node hardware profile (h200-node) is run on many nodes. A profile of one node that names
    no host has nothing to account for (every job spans a node): no check, rather than a PASS of noise.
    """
    if nodes <= 1 and not named_hosts:
        return []
    seen = sorted(set(seen_hosts))
    spans = len(seen)
    if spans < nodes:
        verdict = Verdict.FAIL
        message = (f"the job spans {spans} node{'s' if spans != 1 else ''} ({_named(seen)}); "
                   f"the profile's cluster has {nodes}")
    else:
        verdict = Verdict.PASS
        message = f"the job spans {spans} node{'s' if spans != 1 else ''}, the profile's cluster has {nodes}"
    checks = [
        Check(metric=CLUSTER_NODES_METRIC, params={}, verdict=verdict, observed=float(spans), target=float(nodes),
              unit="nodes", provenance=Provenance.SPEC.value, source=source, message=message)
    ]
    if named_hosts:
        seen_short = {short_name(h) for h in seen}
        named_short = {short_name(h) for h in named_hosts}
        missing = [h for h in named_hosts if short_name(h) not in seen_short]
        strangers = [h for h in seen if short_name(h) not in named_short]
        if missing:
            message = (f"{len(missing)} of the {len(named_hosts)} hosts the profile names did not join the job: "
                   f"{_named(missing)}")
        else:
            message = f"every one of the {len(named_hosts)} hosts the profile names joined the job"
        checks.append(
            Check(metric=CLUSTER_HOSTS_METRIC, params={}, verdict=Verdict.FAIL if missing else Verdict.PASS,
                  observed=float(len(named_hosts) - len(missing)), target=float(len(named_hosts)), unit="hosts",
                  provenance=Provenance.SPEC.value, source=source, message=message)
        )
        if strangers:
            checks.append(
                Check(metric=CLUSTER_HOSTS_METRIC, params={"outside": "hosts"}, verdict=Verdict.WARN,
                      observed=float(len(strangers)), target=0.0, unit="hosts", provenance=Provenance.SPEC.value,
                      source=source, better=Better.LOWER,
                      message=f"the job ran on {len(strangers)} host{'s' if len(strangers) != 1 else ''} the profile"
                              f" does not name, whose figures are in this run: {_named(strangers)}")
            )
    return checks
