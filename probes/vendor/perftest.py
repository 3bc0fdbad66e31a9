"""InfiniBand/RoCE write bandwidth between nodes with perftest's ib_write_bw, HCA port by HCA port.

The figure is perftest's own "BW average[Gb/sec]" (`--report_gbits`): gigabits per second, the unit
a port's rate is stated in (`ib.min_active_rate_gbps`, "400 Gb/sec (4X NDR)"), so a link's figure
reads directly against its port's rate; GB/s would hide a factor of 8 in every comparison.

Nodes are paired as the pairwise node test pairs them (clusterbench.runners.groups.first_pass_pairs),
one leader rank per node. In each round every node is in at most one pair; within a pair the links
(the ACTIVE ports both nodes have, by HCA name and port: rail to rail) are measured one at a time. For
each link the first node starts the server, every rank meets at a barrier, then the second node runs
the client against the first node's host name (retrying while the server is not listening yet). The
outcomes travel to every rank at the end, through the run's process group (a Gloo group of its own).
Nothing between two barriers raises: a failed link is an outcome, so no rank is left waiting.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from clusterbench.model import Location, Measurement, NotMeasured, ProbeFailed
from clusterbench.probes.infiniband import read_ib_ports
from clusterbench.probes.vendor import ToolRun, find_tool, finish_tool, run_tool, start_tool
from clusterbench.registry import declare_probe, metric
from clusterbench.runners.groups import Pair, first_pass_pairs

METRIC = "ib.write_bw_gbps"
PROBE = declare_probe("perftest", per="world", settings=("collective_timeout_s",), module=__name__, metrics=[
    metric(METRIC, "Gb/s", "higher", "network",
           "RDMA write bandwidth of one HCA port to the same port of a peer node: perftest ib_write_bw "
           "--report_gbits, BW average", ("hca", "port", "peer")),
])

TOOL = "ib_write_bw"
INSTALL_HINT = "install perftest (e.g. apt-get install perftest)"
MESSAGE_BYTES = 1 << 20  # large enough that one QP reaches line rate on HDR/NDR
BASE_TCP_PORT = 18515  # perftest's default out-of-band port; each link of a round gets its own
CONNECT_RETRIES = 20  # one a second while the server is not listening yet
NOT_LISTENING = ("Couldn't connect", "Unable to init the socket connection", "Unable to open file descriptor")


@dataclass(frozen=True)
class WriteBwRow:
    """One row of ib_write_bw's table."""

    message_bytes: int
    iterations: int
    bw_peak_gbps: float | None  # None where perftest prints none (duration mode on some versions)
    bw_average_gbps: float
    msg_rate_mpps: float


def parse_write_bw(text: str) -> list[WriteBwRow]:
    """The rows of ib_write_bw's table; ProbeFailed unless it is in Gb/sec (run without --report_gbits
    it prints MB/sec, which are 2^20 bytes, and a figure in the wrong unit must not pass as Gb/s)."""
    lines = text.splitlines()
    header = next((i for i, line in enumerate(lines) if "#bytes" in line and "BW average[" in line), None)
    if header is None:
        raise ProbeFailed("ib_write_bw printed no result table (no '#bytes ... BW average[...]' header)")
    unit = lines[header].split("BW average[", 1)[1].split("]", 1)[0]
    if unit != "Gb/sec":
        raise ProbeFailed(f"ib_write_bw reported BW average in {unit}, not Gb/sec: run it with --report_gbits")
    rows = []
    for line in lines[header + 1:]:
        tokens = line.split()
        if not tokens or not tokens[0].isdigit():
            break  # the closing dashes
        if len(tokens) < 5:
            raise ProbeFailed(f"ib_write_bw row has {len(tokens)} columns, expected 5: {line.strip()!r}")
        rows.append(WriteBwRow(int(tokens[0]), int(tokens[1]), _number(tokens[2]), float(tokens[3]), float(tokens[4])))
    if not rows:
        raise ProbeFailed("ib_write_bw's result table has no rows")
    return rows


def _number(token: str) -> float | None:
    try:
        return float(token)
    except ValueError:
        return None


@dataclass(frozen=True)
class Link:
    hca: str
    port: int


def server_command(
    binary: str, link: Link, tcp_port: int, duration_s: float, gid_index: int | None = None
) -> list[str]:
    # On RoCE the port's RoCE v2 GID (-x): perftest's default GID may be RoCE v1, which a routed
    # RoCE v2 fabric does not carry, and a healthy link would read as failed.
    gid = ["-x", str(gid_index)] if gid_index is not None else []
    return [binary, "-d", link.hca, "-i", str(link.port), *gid, "-s", str(MESSAGE_BYTES),
            "-D", str(math.ceil(duration_s)), "-p", str(tcp_port), "-F", "--report_gbits"]


def client_command(binary: str, link: Link, tcp_port: int, duration_s: float, server_host: str,
                   gid_index: int | None = None) -> list[str]:
    return [*server_command(binary, link, tcp_port, duration_s, gid_index), server_host]


IPV4_MAPPED_GID = "0000:0000:0000:0000:0000:ffff:"  # ::ffff:a.b.c.d, as sysfs writes a GID


def roce_v2_gid_index(sysfs_root: Path, hca: str, port: int) -> int | None:
    """A RoCE port's RoCE v2 GID index (sysfs gid_attrs): its IPv4-mapped one, which routes across
    subnets, else its first set one; None on an InfiniBand port or without one."""
    port_dir = sysfs_root / "class" / "infiniband" / hca / "ports" / str(port)
    types = port_dir / "gid_attrs" / "types"
    if not types.is_dir():
        return None
    roce_v2: list[tuple[int, str]] = []
    for entry in sorted(types.iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else 1 << 30):
        try:
            kind = entry.read_text().strip()
            gid = (port_dir / "gids" / entry.name).read_text().strip()
        except OSError:
            continue  # an unused index reads as an error
        if kind.lower() == "roce v2" and gid.strip("0:"):
            roce_v2.append((int(entry.name), gid))
    ipv4 = [index for index, gid in roce_v2 if gid.startswith(IPV4_MAPPED_GID)]
    candidates = ipv4 or [index for index, _ in roce_v2]
    return candidates[0] if candidates else None


@dataclass
class NodeOffer:
    """What a node's leader brings to the plan: its host, rank, ACTIVE ports and binary, or why not."""

    host: str
    rank: int
    links: list[Link] = field(default_factory=list)
    binary: str = ""
    reason: str = ""
    roce_gids: dict[str, int] = field(default_factory=dict)  # "hca/port" -> its RoCE v2 GID index

    def gid_index(self, link: Link) -> int | None:
        return self.roce_gids.get(f"{link.hca}/{link.port}")


@dataclass
class LinkOutcome:
    """One link's result as it travels to every rank: a figure, or the reason there is none."""

    server: str
    client: str
    client_rank: int
    hca: str
    port: int
    value_gbps: float | None = None
    reason: str = ""
    failed: bool = False  # the tool ran and failed (a FAIL), as opposed to could not run here
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def location(self) -> Location:
        device = f"{self.hca}/{self.port}" if self.hca else "node"
        return Location(host=self.client, rank=self.client_rank, device=device)

    def measurement(self) -> Measurement:
        if self.value_gbps is None:
            raise (ProbeFailed if self.failed else NotMeasured)(self.reason)
        return Measurement(METRIC, self.value_gbps, "Gb/s", {"hca": self.hca, "port": self.port, "peer": self.server},
                           self.location, samples=[self.value_gbps], details=self.details)


class NodeExchange(Protocol):
    """How the ranks of a run meet: every rank calls each method, in the same order."""

    def all_gather(self, obj: Any) -> list[Any]: ...

    def barrier(self) -> None: ...


class TorchExchange:
    """NodeExchange over torch.distributed: a Gloo group of the whole world (objects and barriers need
    no GPU), with the run's deadline so a dead peer fails the test instead of holding it for 30 min."""

    def __init__(self, timeout_s: float) -> None:
        from datetime import timedelta

        import torch.distributed as dist

        self._dist = dist
        self._group = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))

    def all_gather(self, obj: Any) -> list[Any]:
        gathered: list[Any] = [None] * self._dist.get_world_size()
        self._dist.all_gather_object(gathered, obj, group=self._group)
        return gathered

    def barrier(self) -> None:
        self._dist.barrier(group=self._group)


def node_offer(host: str, rank: int, sysfs_root: Path = Path("/sys")) -> NodeOffer:
    """This node's ACTIVE ports and ib_write_bw, or the reason it cannot take part."""
    try:
        binary = find_tool(TOOL, install_hint=INSTALL_HINT)
        ports = [p for p in read_ib_ports(sysfs_root) if p.active]
    except NotMeasured as exc:
        return NodeOffer(host, rank, reason=f"{host}: {exc}")
    if not ports:
        return NodeOffer(host, rank, reason=f"{host}: no ACTIVE InfiniBand/RoCE port")
    gids = {f"{p.device}/{p.port}": index for p in ports if p.link_layer == "Ethernet"
            and (index := roce_v2_gid_index(sysfs_root, p.device, p.port)) is not None}
    return NodeOffer(host, rank, [Link(p.device, p.port) for p in ports], binary, roce_gids=gids)


def disjoint_rounds(pairs: Sequence[Pair]) -> list[list[Pair]]:
    """The pairs in rounds where no node is in two pairs at once (an odd node count pairs the last
    node with the first, which must wait for the first's own pair)."""
    rounds: list[list[Pair]] = []
    for pair in pairs:
        for round_ in rounds:
            if not {node for p in round_ for node in p} & set(pair):
                round_.append(pair)
                break
        else:
            rounds.append([pair])
    return rounds


def common_links(a: NodeOffer, b: NodeOffer) -> list[Link]:
    """The links both nodes have ACTIVE, by HCA name and port: rail-optimised fabrics connect mlx5_N to mlx5_N."""
    theirs = {(link.hca, link.port) for link in b.links}
    return [link for link in a.links if (link.hca, link.port) in theirs]


def measure_between_nodes(
    exchange: NodeExchange, offer: NodeOffer | None, *, duration_s: float, timeout_s: float,
    run: Callable[[list[str], float], ToolRun] = run_tool,
) -> list[LinkOutcome]:
    """Every link of every first-pass node pair, as outcomes every rank receives. `offer` is this rank's
    NodeOffer if it leads its node, else None. Every rank of the run must call it."""
    offers = [o if isinstance(o, NodeOffer) or o is None else NodeOffer(**o) for o in exchange.all_gather(offer)]
    leaders = {o.host: o for o in offers if o is not None}
    if len(leaders) < 2:
        hosts = ", ".join(leaders) or "none"
        raise NotMeasured(f"ib_write_bw runs between two nodes; this run has {len(leaders)} node ({hosts})")
    mine: list[LinkOutcome] = []
    for round_ in disjoint_rounds(first_pass_pairs(list(leaders))):
        plans = {pair: _pair_plan(leaders[pair[0]], leaders[pair[1]]) for pair in round_}
        for (server, client), (_, reason) in plans.items():
            if reason and offer is not None and offer.host == client:
                mine.append(LinkOutcome(server, client, offer.rank, "", 0, reason=reason))
        for step in range(max((len(links) for links, _ in plans.values()), default=0)):
            mine += _measure_step(exchange, offer, plans, step, leaders, duration_s, timeout_s, run)
    outcomes = [o if isinstance(o, LinkOutcome) else LinkOutcome(**o) for part in exchange.all_gather(
        [asdict(o) for o in mine]) for o in part]
    return sorted(outcomes, key=lambda o: (o.client, o.server, o.hca, o.port))


def _pair_plan(server: NodeOffer, client: NodeOffer) -> tuple[list[Link], str]:
    missing = [o.reason for o in (server, client) if o.reason]
    if missing:
        return [], f"link {server.host}<->{client.host} not measured: {'; '.join(missing)}"
    links = common_links(server, client)
    if not links:
        return [], (f"link {server.host}<->{client.host} not measured: no ACTIVE HCA port in common "
                    f"({server.host}: {_names(server.links)}; {client.host}: {_names(client.links)})")
    return links, ""


def _names(links: Sequence[Link]) -> str:
    return ", ".join(f"{link.hca}/{link.port}" for link in links)


def _measure_step(exchange: NodeExchange, offer: NodeOffer | None, plans: dict[Pair, tuple[list[Link], str]],
                  step: int, leaders: dict[str, NodeOffer], duration_s: float, timeout_s: float,
                  run: Callable[[list[str], float], ToolRun]) -> list[LinkOutcome]:
    """One link of each pair of a round: servers start, everyone meets, clients run, servers are reaped."""
    tcp_port = BASE_TCP_PORT + step
    active = {pair: links[step] for pair, (links, _) in plans.items() if step < len(links)}
    serving = next(((pair, link) for pair, link in active.items() if offer and offer.host == pair[0]), None)
    # (the server's process, or None when it did not start; its command, or why it did not start)
    server: tuple[Any, list[str] | str] | None = None
    if offer is not None and serving is not None:
        command = server_command(offer.binary, serving[1], tcp_port, duration_s, offer.gid_index(serving[1]))
        try:
            server = (start_tool(command), command)
        except OSError as exc:
            server = (None, f"{command[0]} did not start: {exc}")
    exchange.barrier()
    outcome = None
    for (a, b), link in active.items():
        if offer is not None and offer.host == b:
            outcome = _run_client(offer, leaders[a], link, tcp_port, duration_s, timeout_s, run)
    if server is not None:
        _reap_server(server, timeout_s)
    return [outcome] if outcome is not None else []


def _run_client(offer: NodeOffer, server: NodeOffer, link: Link, tcp_port: int, duration_s: float,
                timeout_s: float, run: Callable[[list[str], float], ToolRun]) -> LinkOutcome:
    outcome = LinkOutcome(server.host, offer.host, offer.rank, link.hca, link.port)
    command = client_command(offer.binary, link, tcp_port, duration_s, server.host, offer.gid_index(link))
    try:
        for _ in range(CONNECT_RETRIES):
            result = run(command, timeout_s)
            if result.returncode == 0 or not any(m in result.stdout + result.stderr for m in NOT_LISTENING):
                break
            time.sleep(1)
        if result.returncode != 0:
            raise ProbeFailed(f"exit status {result.returncode}: {result.last_line()}")
        row = parse_write_bw(result.stdout)[-1]
    except (ProbeFailed, OSError) as exc:
        outcome.failed = True
        outcome.reason = f"ib_write_bw {offer.host} -> {server.host} {link.hca}/{link.port} failed: {exc}"
        return outcome
    outcome.value_gbps = row.bw_average_gbps
    outcome.details = {"command": " ".join(command), **asdict(row)}
    return outcome


def _reap_server(server: tuple[Any, Any], timeout_s: float) -> None:
    process, command = server
    if process is None:
        return
    with contextlib.suppress(ProbeFailed):  # the client's outcome says what happened; the server is killed by now
        finish_tool(process, command, timeout_s)
