"""Topology generators (random mesh of average degree d, star, tree): pure functions of their spec.

Random mesh: a random spanning tree (each node joins a random earlier node) guarantees
connectivity, then random extra edges until the edge count is round(n * d / 2) (up to 1,500
nodes drawn from a shuffle of all pairs; above, pairs drawn one at a time, so 65,000 nodes
need no 2-billion-pair list). Link bandwidths
are drawn from a normal distribution with the given mean and variance, clipped below at 10%
of the mean so that no link is zero or negative (the thesis gives mean and variance only).
"""

from __future__ import annotations

import random

from testbed.topology.schema import RandomMesh, Star, Tree

Edge = tuple[str, str, float]
SHUFFLE_ALL_PAIRS_UP_TO = 1500


def mesh_edge_count(spec: RandomMesh) -> int:
    return round(spec.nodes * spec.degree / 2)


def random_mesh(spec: RandomMesh) -> tuple[list[str], list[Edge]]:
    rng = random.Random(spec.seed)
    names = [f"{spec.prefix}{i}" for i in range(1, spec.nodes + 1)]
    order = names[:]
    rng.shuffle(order)
    edges: set[tuple[str, str]] = set()
    for i in range(1, len(order)):
        a, b = order[i], order[rng.randrange(i)]
        edges.add((min(a, b), max(a, b)))
    target = mesh_edge_count(spec)
    if spec.nodes <= SHUFFLE_ALL_PAIRS_UP_TO:  # the original draw (published seeds keep it)
        candidates = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
        candidates = [(min(a, b), max(a, b)) for a, b in candidates]
        rng.shuffle(candidates)
        for pair in candidates:
            if len(edges) >= target:
                break
            edges.add(pair)
    else:  # memory and time linear in the edges, not quadratic in the nodes
        while len(edges) < target:
            a, b = rng.sample(names, 2)
            edges.add((min(a, b), max(a, b)))
    std = spec.bw_var**0.5
    out = []
    position = {n: i for i, n in enumerate(names)}
    for a, b in sorted(edges, key=lambda e: (position[e[0]], position[e[1]])):
        bw = max(rng.gauss(spec.bw_mean, std), 0.1 * spec.bw_mean) if std else spec.bw_mean
        out.append((a, b, round(bw, 3)))
    return names, out


def draw_profiles(spec: RandomMesh, names: list[str]) -> dict[str, str]:
    """A profile per generated node, drawn at random (seeded) from spec.profiles."""
    if not spec.profiles:
        return {}
    rng = random.Random(spec.seed + 104729)
    return {n: rng.choice(spec.profiles) for n in names}


def star(spec: Star) -> tuple[list[str], list[Edge]]:
    names = [f"{spec.prefix}{i}" for i in range(1, spec.nodes + 1)]
    return names, [(names[0], n, spec.bw) for n in names[1:]]


def tree(spec: Tree) -> tuple[list[str], list[Edge]]:
    names = [f"{spec.prefix}1"]
    edges: list[Edge] = []
    level = [names[0]]
    for _ in range(spec.depth):
        nxt = []
        for parent in level:
            for _ in range(spec.fanout):
                child = f"{spec.prefix}{len(names) + 1}"
                names.append(child)
                edges.append((parent, child, spec.bw))
                nxt.append(child)
        level = nxt
    return names, edges
