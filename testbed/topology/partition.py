"""`partition: auto`: which host runs each node of a topology split over several hosts.

Two costs pull apart: every link cut between hosts becomes a VXLAN tunnel over the hosts'
network (its traffic leaves the machine), and every host has only so many cores. So nodes are
grown into one connected region per host, each taking its share of the nodes' CPU (a node
without a quota counts as one core), always adding the node most strongly linked to the
region; then single nodes move between hosts while that lowers the bandwidth cut and keeps
each host within its share plus one node. Deterministic: the same file gives the same split.
Nodes pinned with `host:` stay where they are and count towards their host's share.
"""

from __future__ import annotations

from collections.abc import Mapping

UNSHAPED_WEIGHT_MBIT = 100_000.0  # an unshaped link can carry anything: the worst one to cut
MAX_PASSES = 20


def node_cpu(cpu: float | None) -> float:
    return 1.0 if cpu is None else cpu


def split(cpu: Mapping[str, float], links: list[tuple[str, str, float | None]],
          hosts: list[str], pinned: Mapping[str, str]) -> dict[str, str]:
    """Node -> host for every node of `cpu` (node -> cores), given the links (a, b, Mbit/s or
    None when unshaped) and the nodes already pinned to a host."""
    weight: dict[str, dict[str, float]] = {n: {} for n in cpu}
    for a, b, bw in links:
        w = UNSHAPED_WEIGHT_MBIT if bw is None else bw
        weight[a][b] = weight[a].get(b, 0.0) + w
        weight[b][a] = weight[b].get(a, 0.0) + w
    share = sum(cpu.values()) / len(hosts)
    out = dict(pinned)
    load = {h: sum(cpu[n] for n, p in pinned.items() if p == h) for h in hosts}
    free = sorted(n for n in cpu if n not in out)
    for i, h in enumerate(hosts):
        last = i == len(hosts) - 1
        while free and (last or load[h] < share):
            n = max(free, key=lambda v: (sum(w for u, w in weight[v].items() if out.get(u) == h),
                                         -len(weight[v]), v == free[0]))
            out[n] = h
            load[h] += cpu[n]
            free.remove(n)
    limit = share + max(cpu.values(), default=0.0)
    movable = sorted(n for n in cpu if n not in pinned)
    for _ in range(MAX_PASSES):
        moved = False
        for n in movable:
            here = out[n]
            pull = {h: 0.0 for h in hosts}
            for u, w in weight[n].items():
                pull[out[u]] += w
            best = max(hosts, key=lambda h: (pull[h] - pull[here], h == here))
            if (best != here and pull[best] > pull[here]
                    and load[best] + cpu[n] <= limit and load[here] - cpu[n] > 0):
                out[n] = best
                load[here] -= cpu[n]
                load[best] += cpu[n]
                moved = True
        if not moved:
            break
    return out


def cut_mbit(place: Mapping[str, str], links: list[tuple[str, str, float | None]]) -> float:
    """The bandwidth of the links a placement cuts (unshaped links at UNSHAPED_WEIGHT_MBIT)."""
    return sum(UNSHAPED_WEIGHT_MBIT if bw is None else bw
               for a, b, bw in links if place[a] != place[b])
