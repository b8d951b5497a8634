"""The fabric's links as the kernel sees them: the interface group every root-namespace
interface of a testbed shares, name -> index lookups, and each link's state."""

from __future__ import annotations

from pyroute2 import IPRoute

from testbed.naming import Names
from testbed.net import netns, shards
from testbed.net.ledger import Ledger


def link_group(names: Names) -> int:
    """The interface group all of this testbed's root-namespace interfaces share."""
    return int(names.tag[1:], 16) | 0x40000000


def interface_indexes(ip: IPRoute) -> dict[str, int]:
    """Name -> index of every interface, from one dump (link_lookup dumps all links per call)."""
    return {link.get_attr("IFLA_IFNAME"): link["index"] for link in ip.get_links()}


def link_states(ledger: Ledger) -> dict[int, str]:
    """Link index -> "up" when both ends of its veth pair are up and have carrier, else
    "down" (e.g. set down outside the testbed), read from the kernel in one dump."""
    names = ledger.names
    seen = {}
    where = shards.port_namespaces(names, ledger.extra, ledger.topology["links"])
    for ns in set(where.values()):  # one dump per switch daemon's namespace
        with netns.netlink(ns) as ip:
            seen.update({link.get_attr("IFLA_IFNAME"): link for link in ip.get_links()})
    out = {}
    for i in range(len(ledger.topology["links"])):
        ends = [seen.get(names.link_port(i, e)) for e in (0, 1)]
        if any(x is None for x in ends):
            continue
        ok = all(x["flags"] & 1 and x.get_attr("IFLA_CARRIER") for x in ends)
        out[i] = "up" if ok else "down"
    return out


