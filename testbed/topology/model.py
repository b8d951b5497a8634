"""The immutable Topology model every other part reads: nodes, links, shaping and addresses."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import cached_property

import networkx as nx

SUBNET = ipaddress.ip_network("10.0.0.0/16")


@dataclass(frozen=True)
class LinkShape:
    """What one direction of a link is shaped to; None/0 means unshaped."""

    bw_mbit: float | None = None
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0

    @property
    def needs_netem(self) -> bool:
        return bool(self.delay_ms or self.jitter_ms or self.loss_pct)


@dataclass(frozen=True)
class Node:
    name: str
    index: int
    kind: str = "host"
    cpu: float | None = None
    memory_mb: int | None = None
    profile: str | None = None
    image: str | None = None
    speed: float | None = None
    ssh: dict | None = None
    container: dict | None = None  # docker nodes: cmd, env, volumes, privileged, cap_add
    host: str | None = None  # which of the topology's hosts runs it (None: not split)

    @property
    def ip(self) -> str:
        return str(SUBNET[self.index + 1])

    @property
    def mac(self) -> str:
        i = self.index + 1
        return f"02:00:0a:00:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}"


@dataclass(frozen=True)
class Link:
    index: int
    a: str
    b: str
    shape: LinkShape = field(default_factory=LinkShape)

    @property
    def between(self) -> tuple[str, str]:
        return (self.a, self.b)


@dataclass(frozen=True)
class Host:
    """A machine that runs part of a split topology; `netns` when it is a network namespace
    on this machine (trying a split on one machine)."""

    name: str
    address: str
    netns: str | None = None

    def to_dict(self) -> dict:
        return {"address": self.address, **({"netns": self.netns} if self.netns else {})}


@dataclass(frozen=True)
class Topology:
    name: str
    nodes: tuple[Node, ...]
    links: tuple[Link, ...]
    source: str = "<memory>"
    switches_per_daemon: int | None = None  # None: the default (testbed/net/shards.py)
    hosts: tuple[Host, ...] = ()  # empty: everything on this machine

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    @property
    def cut_links(self) -> list[Link]:
        """Links whose ends run on different hosts (VXLAN tunnels between the hosts)."""
        host = {n.name: n.host for n in self.nodes}
        return [lk for lk in self.links if host[lk.a] != host[lk.b]]

    def node(self, name: str) -> Node:
        return self._by_name[name]

    @cached_property
    def _by_name(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    @cached_property
    def graph(self) -> nx.Graph:
        """Nodes and links as an undirected graph; edges carry `link` and `bw_mbit`."""
        g = nx.Graph()
        g.add_nodes_from(n.name for n in self.nodes)
        for link in self.links:
            g.add_edge(link.a, link.b, link=link.index, bw_mbit=link.shape.bw_mbit)
        return g

    def link_between(self, a: str, b: str) -> Link | None:
        data = self.graph.get_edge_data(a, b)
        return self.links[data["link"]] if data else None

    @property
    def needs_netem(self) -> bool:
        return any(link.shape.needs_netem for link in self.links)

    @classmethod
    def from_dict(cls, d: dict, source: str = "<state>") -> Topology:
        """The inverse of to_dict (what a running testbed recorded in its state file)."""
        nodes = tuple(Node(name=n, index=i, kind=v["kind"], cpu=v.get("cpu"),
                           memory_mb=v.get("memory_mb"), profile=v.get("profile"),
                           speed=v.get("speed"), image=v.get("image"), ssh=v.get("ssh"),
                           container=v.get("container"), host=v.get("host"))
                      for i, (n, v) in enumerate(d["nodes"].items()))
        links = tuple(Link(index=i, a=lk["between"][0], b=lk["between"][1],
                           shape=LinkShape(lk["bw_mbit"], lk.get("delay_ms", 0.0),
                                           lk.get("jitter_ms", 0.0), lk.get("loss_pct", 0.0)))
                      for i, lk in enumerate(d["links"]))
        hosts = tuple(Host(name=h, address=v["address"], netns=v.get("netns"))
                      for h, v in d.get("hosts", {}).items())
        return cls(name=d["name"], nodes=nodes, links=links, source=source,
                   switches_per_daemon=d.get("fabric", {}).get("switches_per_daemon"),
                   hosts=hosts)

    def to_dict(self) -> dict:
        """The status view of the topology (also what `testbed status --json` prints)."""
        return {
            "name": self.name,
            "nodes": {n.name: {"ip": n.ip, "kind": n.kind, "cpu": n.cpu, "memory_mb": n.memory_mb,
                               "profile": n.profile, "speed": n.speed,
                               **({"image": n.image} if n.image else {}),
                               **({"ssh": n.ssh} if n.ssh else {}),
                               **({"container": n.container} if n.container else {}),
                               **({"host": n.host} if n.host else {})}
                      for n in self.nodes},
            "links": [{"between": [lk.a, lk.b], "bw_mbit": lk.shape.bw_mbit,
                       "delay_ms": lk.shape.delay_ms, "jitter_ms": lk.shape.jitter_ms,
                       "loss_pct": lk.shape.loss_pct} for lk in self.links],
            **({"fabric": {"switches_per_daemon": self.switches_per_daemon}}
               if self.switches_per_daemon is not None else {}),
            **({"hosts": {h.name: h.to_dict() for h in self.hosts}} if self.hosts else {}),
        }
