"""The network as schedulers see it: node speeds and memory, link bandwidths, candidate paths.

Built from a Topology plus node speeds measured by profiling (or `speed:` in the topology, or
cores x a per-core speed), never from the live network, so schedulers stay pure functions.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import cached_property

import networkx as nx
import numpy as np

from testbed.routing import follow, hops_toward
from testbed.topology.model import Topology

DEFAULT_GOPS_PER_CORE = 20.0  # giga-operations/s of one core, when nothing was measured
DEFAULT_MEMORY_MB = 4096
GOODPUT_PER_LINE_RATE = 1448 / 1514  # TCP payload per Ethernet frame (1500 MTU, timestamps)


def link_key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


@dataclass(frozen=True)
class NodeView:
    name: str
    speed_gops: float  # giga-operations per second
    memory_bytes: int
    cores: float


@dataclass(frozen=True)
class NetworkView:
    nodes: dict[str, NodeView]
    links: dict[tuple[str, str], float]  # link_key -> bandwidth in Mbit/s
    k_paths: int = 3
    order: tuple[str, ...] = field(default=())

    @classmethod
    def from_topology(cls, topo: Topology, speeds: dict[str, float] | None = None,
                      gops_per_core: float = DEFAULT_GOPS_PER_CORE, k_paths: int = 3,
                      unshaped_mbit: float = 1000.0) -> NetworkView:
        """`speeds` (measured GOPS per node) win over `speed:` in the topology, which wins over
        cores x gops_per_core. Link capacity is what TCP can carry: the configured line rate
        x 1448/1514, so planned rates are goodputs a measurement can confirm."""
        speeds = speeds or {}
        nodes = {}
        for n in topo.nodes:
            cores = n.cpu if n.cpu is not None else 1.0
            speed = speeds.get(n.name) or n.speed or cores * gops_per_core
            memory = (n.memory_mb or DEFAULT_MEMORY_MB) * 1_000_000
            nodes[n.name] = NodeView(n.name, float(speed), memory, cores)
        links = {link_key(lk.a, lk.b): (lk.shape.bw_mbit or unshaped_mbit) * GOODPUT_PER_LINE_RATE
                 for lk in topo.links}
        return cls(nodes, links, k_paths, tuple(n.name for n in topo.nodes))

    @cached_property
    def graph(self) -> nx.Graph:
        g = nx.Graph()
        g.add_nodes_from(self.order or self.nodes)
        g.add_edges_from(self.links)
        return g

    @cached_property
    def _paths(self) -> dict[tuple[str, str], list[tuple[str, ...]]]:
        return {}

    @cached_property
    def _adjacency(self) -> tuple[dict[str, list[str]], dict[str, int]]:
        order = {n: i for i, n in enumerate(self.order or self.nodes)}
        return {n: list(self.graph.neighbors(n)) for n in self.graph}, order

    def paths(self, src: str, dst: str) -> list[tuple[str, ...]]:
        """Up to k shortest simple paths by hops. The first is the controller's default route
        (testbed.routing.shortest_path), the others the next shortest simple paths."""
        key = (src, dst)
        if key not in self._paths:
            first = self.shortest_path(src, dst)
            rest = (tuple(p) for p in nx.shortest_simple_paths(self.graph, src, dst))
            others = itertools.islice((p for p in rest if p != first), self.k_paths - 1)
            self._paths[key] = [first, *others]
        return self._paths[key]

    @cached_property
    def _toward(self) -> dict[str, dict[str, str]]:
        return {}

    def _tree(self, dst: str) -> dict[str, str]:
        """Every node's next hop toward dst on the controller's default route, kept."""
        if dst not in self._toward:
            self._toward[dst] = hops_toward(*self._adjacency, dst)
        return self._toward[dst]

    def shortest_path(self, src: str, dst: str) -> tuple[str, ...]:
        """The controller's default route (the first of `paths`), without the search for
        alternatives."""
        return follow(self._tree(dst), src, dst)

    @cached_property
    def link_number(self) -> dict[tuple[str, str], int]:
        """Each link's position in `links`: lets schedulers keep per-link arrays."""
        return {lk: n for n, lk in enumerate(self.links)}

    @cached_property
    def _link_routes(self) -> dict[str, dict[str, tuple[int, ...]]]:
        return {}

    @cached_property
    def _route_matrices(self) -> dict[tuple[str, tuple[str, ...]], np.ndarray]:
        return {}

    def link_routes(self, dst: str) -> dict[str, tuple[int, ...]]:
        """For every node that reaches dst: the link numbers of its shortest path there (the
        same path as shortest_path), found in one pass over the tree toward dst."""
        if dst not in self._link_routes:
            hops, num = self._tree(dst), self.link_number
            out: dict[str, tuple[int, ...]] = {dst: ()}
            for start in hops:
                path = [start]  # up the tree to a node whose route is known, then back down
                while path[-1] not in out:
                    path.append(hops[path[-1]])
                for n, nxt in zip(reversed(path[:-1]), reversed(path[1:]), strict=True):
                    out[n] = (num[link_key(n, nxt)], *out[nxt])
            self._link_routes[dst] = out
        return self._link_routes[dst]

    def route_matrix(self, src: str, dsts: tuple[str, ...]) -> np.ndarray:
        """Link numbers of the routes from src to each of dsts, one column each (hop n in row
        n), padded with len(links) (a link that is not there): per-link arrays then price all
        routes at once."""
        key = (src, dsts)
        if key not in self._route_matrices:
            rows = [self.link_routes(d)[src] for d in dsts]
            width = max(1, *(len(r) for r in rows))
            pad = len(self.links)
            self._route_matrices[key] = np.array([(*r, *(pad,) * (width - len(r)))
                                                  for r in rows]).T.copy()
        return self._route_matrices[key]

    @cached_property
    def mean_bw_mbit(self) -> float:
        return sum(self.links.values()) / len(self.links) if self.links else 1000.0


def path_links(path: tuple[str, ...]) -> list[tuple[str, str]]:
    return [link_key(a, b) for a, b in zip(path, path[1:], strict=False)]
