"""Proof that a testbed's network forwards, from the nodes of one host: ICMP from each pair's
source node to the other's address, and the fabric's idle latency (one hop, and the longest
shortest path). `testbed up` and `testbed check` run it on this machine, or on every host of
a topology built through a cluster (each probing from its own nodes, testbed/hosted.py).
"""

from __future__ import annotations

from testbed import nodes
from testbed.naming import Names
from testbed.net import reach
from testbed.topology.model import Topology

PER_HOP_WARN_MS = 1.0
Pair = tuple[str, str]


def probe(topo: Topology, names: Names, pairs: list[Pair], host: str | None,
          latency: bool = True) -> tuple[list[Pair], dict]:
    """The pairs of `pairs` whose source is on `host` (None: every node on this machine) that
    cannot reach each other, and (with `latency`) the fabric's idle latency from there."""
    where = {n.name: (nodes.of(n.kind).reach_namespace(names, n.name)
                      if host is None or n.host == host else None, n.ip) for n in topo.nodes}
    local = {n for n, (ns, _) in where.items() if ns is not None}
    with reach.Prober(where) as prober:
        missing = prober.unreachable([(a, b) for a, b in pairs if a in local])
        measured = fabric_latency(topo, local, prober) if latency and not missing else {}
    return missing, measured


def fabric_latency(topo: Topology, local: set[str], prober: reach.Prober) -> dict:
    """Idle RTT of one link and of the longest shortest path between local nodes (found by
    a double sweep), and the per-hop cost it implies."""
    adjacency = {n.name: [] for n in topo.nodes}
    for lk in topo.links:
        adjacency[lk.a].append(lk.b)
        adjacency[lk.b].append(lk.a)
    link = next(((lk.a, lk.b) for lk in topo.links if {lk.a, lk.b} <= local), None)
    if link is None:
        return {}
    far = link[0]
    for _ in range(2):  # two sweeps: from any node to its farthest, then from that one
        start = far
        dist = _hop_counts(adjacency, start)
        far = max((n for n in dist if n in local), key=lambda n: (dist[n], n))
    hops = dist[far]
    one = prober.rtt_ms(*link)
    longest = prober.rtt_ms(start, far) if hops > 1 else one
    per_hop = longest / hops if longest is not None and hops else None
    return {"rtt_one_hop_ms": _r(one), "longest_path": [start, far], "longest_path_hops": hops,
            "rtt_longest_path_ms": _r(longest), "rtt_per_hop_ms": _r(per_hop),
            "slow": per_hop is not None and per_hop > PER_HOP_WARN_MS}


def _hop_counts(adjacency: dict[str, list[str]], start: str) -> dict[str, int]:
    dist, frontier = {start: 0}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in adjacency[v]:
                if w not in dist:
                    dist[w] = dist[v] + 1
                    nxt.append(w)
        frontier = nxt
    return dist


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)
