"""Pure routing logic shared by the controller and the testbed: the fabric description handed
to the controller, default shortest paths, and validation of per-flow paths.

Default routes are destination-based: the next hop from u toward d is u's neighbour with the
lowest node index among those one hop closer to d (hop count). That is the lexicographically
smallest shortest path, so every switch agrees on it and meshes with cycles never loop.
`hops_toward` is the one definition of "the shortest path": the controller's routes and the
schedulers' network view both use it, so what is predicted on a path is carried on it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field

from testbed.errors import FlowError
from testbed.naming import HOST_PORT_OFPORT, link_ofport
from testbed.topology.model import Topology

PROTOCOLS = {"tcp": 6, "udp": 17}


@dataclass(frozen=True)
class FabricNode:
    name: str
    index: int
    ip: str
    mac: str

    @property
    def dpid(self) -> int:
        return self.index + 1


@dataclass(frozen=True)
class Fabric:
    """What the controller needs to know: nodes, and for each node its neighbours' ports."""

    nodes: dict[str, FabricNode]
    ports: dict[str, dict[str, int]]  # node -> neighbour -> OpenFlow port on node's switch
    bw_mbit: dict[str, dict[str, float | None]] = field(default_factory=dict)

    @classmethod
    def of(cls, topo: Topology) -> Fabric:
        nodes = {n.name: FabricNode(n.name, n.index, n.ip, n.mac) for n in topo.nodes}
        ports: dict[str, dict[str, int]] = {n: {} for n in nodes}
        bw: dict[str, dict[str, float | None]] = {n: {} for n in nodes}
        for link in topo.links:
            ports[link.a][link.b] = ports[link.b][link.a] = link_ofport(link.index)
            bw[link.a][link.b] = bw[link.b][link.a] = link.shape.bw_mbit
        return cls(nodes, ports, bw)

    def to_dict(self) -> dict:
        return {"nodes": {k: asdict(v) for k, v in self.nodes.items()}, "ports": self.ports,
                "bw_mbit": self.bw_mbit}

    @classmethod
    def from_dict(cls, d: dict) -> Fabric:
        return cls({k: FabricNode(**v) for k, v in d["nodes"].items()}, d["ports"],
                   d.get("bw_mbit", {}))

    def by_dpid(self, dpid: int) -> FabricNode | None:
        return next((n for n in self.nodes.values() if n.dpid == dpid), None)


def hops_toward(adjacency: dict[str, list[str]], order: dict[str, int], dst: str,
                ) -> dict[str, str]:
    """For every node that can reach `dst`: its next hop on the shortest path (hop count; ties
    to the neighbour with the lowest index in `order`)."""
    dist = {dst: 0}
    queue = deque([dst])
    while queue:
        v = queue.popleft()
        for w in adjacency[v]:
            if w not in dist:
                dist[w] = dist[v] + 1
                queue.append(w)
    out = {}
    for u, d in dist.items():
        if u != dst:
            out[u] = min((w for w in adjacency[u] if dist.get(w) == d - 1),
                         key=order.__getitem__)
    return out


def shortest_path(adjacency: dict[str, list[str]], order: dict[str, int], src: str, dst: str,
                  ) -> tuple[str, ...]:
    """The shortest path from src to dst as the controller routes it by default."""
    return follow(hops_toward(adjacency, order, dst), src, dst)


def follow(hops: dict[str, str], src: str, dst: str) -> tuple[str, ...]:
    """The path from src along `hops` (a tree toward dst, from hops_toward)."""
    path = [src]
    while path[-1] != dst:
        path.append(hops[path[-1]])
    return tuple(path)


def next_hops(fabric: Fabric, down: frozenset[frozenset[str]] = frozenset(),
              ) -> dict[str, dict[str, str]]:
    """next_hops[u][d]: the neighbour u forwards to for destination d (u != d), avoiding the
    links in `down` (pairs of node names); destinations cut off from u have no entry."""
    order = {n: fabric.nodes[n].index for n in fabric.nodes}
    alive = {u: [w for w in fabric.ports[u] if frozenset((u, w)) not in down]
             for u in fabric.nodes}
    out: dict[str, dict[str, str]] = {n: {} for n in fabric.nodes}
    for dst in fabric.nodes:
        for u, nxt in hops_toward(alive, order, dst).items():
            out[u][dst] = nxt
    return out


def path_crosses(path: tuple[str, ...] | list[str], down: frozenset[frozenset[str]]) -> bool:
    """Whether a node path uses any link in `down`."""
    return any(frozenset(p) in down for p in zip(path, path[1:], strict=False))


def default_path(fabric: Fabric, src: str, dst: str, hops: dict | None = None) -> list[str]:
    hops = hops or next_hops(fabric)
    path = [src]
    while path[-1] != dst:
        path.append(hops[path[-1]][dst])
    return path


def switch_rules(fabric: Fabric, node: str, hops: dict) -> list[tuple[str, int]]:
    """(destination IP, output port) for every destination, as installed on node's switch."""
    rules = [(fabric.nodes[node].ip, HOST_PORT_OFPORT)]
    for dst, nxt in hops[node].items():
        rules.append((fabric.nodes[dst].ip, fabric.ports[node][nxt]))
    return rules


@dataclass(frozen=True)
class FlowSpec:
    """One flow a scheduler (or a user) wants steered: 5-tuple match, node path, rate."""

    src: str
    dst: str
    path: tuple[str, ...]
    proto: str = "tcp"
    sport: int | None = None
    dport: int | None = None
    rate_mbit: float | None = None
    id: int = 0
    reverse_rate_mbit: float | None = None  # cap on the replies (dst -> src), at dst's egress

    @property
    def match(self) -> tuple:
        """What the switches match on, the same for the flow and its replies."""
        ends = sorted([(self.src, self.sport), (self.dst, self.dport)], key=str)
        return (self.proto, *ends)

    def reversed(self) -> FlowSpec:
        """The replies as a flow of their own: dst -> src, ports swapped, path reversed."""
        return FlowSpec(self.dst, self.src, tuple(reversed(self.path)), self.proto, self.dport,
                        self.sport, self.reverse_rate_mbit, self.id)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = list(self.path)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FlowSpec:
        known = {"src", "dst", "path", "proto", "sport", "dport", "rate_mbit", "id",
                 "reverse_rate_mbit"}
        unknown = set(d) - known
        if unknown:
            raise FlowError(f"unknown flow field(s) {sorted(unknown)}; allowed: {sorted(known)}")
        try:
            return cls(**{**d, "path": tuple(d.get("path") or ())})
        except TypeError as e:
            raise FlowError(f"bad flow {d}: {e}") from None


def hop_ports(fabric: Fabric, path: tuple[str, ...]) -> list[tuple[str, int, int]]:
    """(node, in_port, out_port) on each switch of a path, ending at the destination host."""
    out = []
    for i, node in enumerate(path):
        in_port = HOST_PORT_OFPORT if i == 0 else fabric.ports[node][path[i - 1]]
        out_port = HOST_PORT_OFPORT if i == len(path) - 1 else fabric.ports[node][path[i + 1]]
        out.append((node, in_port, out_port))
    return out


def validate_flow(fabric: Fabric, flow: FlowSpec) -> None:
    """Raise FlowError unless the flow can be installed as asked."""
    for role, node in (("source", flow.src), ("destination", flow.dst)):
        if node not in fabric.nodes:
            raise FlowError(f"unknown {role} node {node!r}")
    if flow.src == flow.dst:
        raise FlowError("source and destination are the same node")
    if flow.proto not in PROTOCOLS:
        raise FlowError(f"protocol {flow.proto!r} is not supported; use tcp or udp")
    for name, port in (("sport", flow.sport), ("dport", flow.dport)):
        if port is not None and not (isinstance(port, int) and 1 <= port <= 65535):
            raise FlowError(f"{name} {port!r} is out of range; use 1-65535")
    path = flow.path
    if not path:
        raise FlowError("the flow has no path")
    for node in path:
        if node not in fabric.nodes:
            raise FlowError(f"path {','.join(path)}: unknown node {node!r}")
    if path[0] != flow.src or path[-1] != flow.dst:
        raise FlowError(f"path {','.join(path)} must start at {flow.src} and end at {flow.dst}")
    for a, b in zip(path, path[1:], strict=False):
        if b not in fabric.ports[a]:
            raise FlowError(f"path {','.join(path)}: {a} and {b} are not linked")
    seen = set()
    for node, in_port, _ in hop_ports(fabric, path):
        if (node, in_port) in seen:
            raise FlowError(f"path {','.join(path)} enters {node} twice the same way (a loop)")
        seen.add((node, in_port))
    for what, rate, hops in (("rate", flow.rate_mbit, path),
                             ("reverse rate", flow.reverse_rate_mbit, path[::-1])):
        if rate is None:
            continue
        if rate <= 0:
            raise FlowError(f"{what} {rate} Mbit/s must be positive")
        for a, b in zip(hops, hops[1:], strict=False):
            bw = fabric.bw_mbit.get(a, {}).get(b)
            if bw is not None and rate > bw + 1e-9:
                raise FlowError(f"{what} {rate:g} Mbit/s exceeds link {a}-{b} ({bw:g} Mbit/s) "
                                f"on path {','.join(hops)}; ask at most {bw:g}")


def duplicate_of(flow: FlowSpec, installed: list[FlowSpec]) -> FlowSpec | None:
    """The installed flow that already matches the same packets (either direction), if any:
    two flows with one match would fight over the same switch rules."""
    return next((f for f in installed if f.match == flow.match), None)
