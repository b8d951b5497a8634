"""Kinds of node, registered by name like schedulers: `of("docker")` or `of_node(ledger, n)`
gives the object that knows how to build, run, sample, shape and tear down that kind.
A new kind is one module with a NodeKind subclass and one `register` line here."""

from __future__ import annotations

from testbed.errors import InputError
from testbed.net.ledger import Ledger
from testbed.nodes.base import NodeKind
from testbed.nodes.device import Device
from testbed.nodes.docker import Docker
from testbed.nodes.host import Host

KINDS: dict[str, NodeKind] = {}


def register(kind: NodeKind) -> None:
    KINDS[kind.name] = kind


for _kind in (Host(), Docker(), Device()):  # also the order `up` builds them in
    register(_kind)


def of(name: str) -> NodeKind:
    try:
        return KINDS[name]
    except KeyError:
        raise InputError(f"unknown node kind {name!r}; known: {', '.join(KINDS)}") from None


def of_node(ledger: Ledger, node: str) -> NodeKind:
    """The kind of a node of a running testbed (InputError naming the nodes if unknown)."""
    if node not in ledger.topology["nodes"]:
        nodes = ", ".join(ledger.topology["nodes"])
        raise InputError(f"no node {node!r} in testbed {ledger.name} (nodes: {nodes})")
    return of(ledger.topology["nodes"][node]["kind"])


def cluster_host(ledger: Ledger, node: str) -> str | None:
    """The host whose Ray node must act on `node`'s kernel state (its namespace, cgroups, tc)
    when the topology was built through a cluster (the host may be another machine); None
    when this process can (everything on this machine, or a device: reached over SSH)."""
    info = ledger.topology["nodes"][node]
    if ledger.extra.get("cluster") and info.get("host") and of(info["kind"]).local:
        return info["host"]
    return None


def on_node_host(ledger: Ledger, node: str, fn, *args):
    """fn(*args) where `node` lives: here, or by its host's Ray node (cluster_host)."""
    host = cluster_host(ledger, node)
    if host is None:
        return fn(*args)
    from testbed.raycluster import call_on_host

    return call_on_host(ledger.extra["cluster"], host, fn, *args)
