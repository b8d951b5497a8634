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
