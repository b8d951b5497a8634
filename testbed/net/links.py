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


def port_states(ledger: Ledger, host: str | None = None) -> dict[str, bool]:
    """Link-end interface -> up with carrier, for the ends on `host` (None: every end this
    machine has), read from the kernel in one dump per switch daemon's namespace."""
    names = ledger.names
    on = {n: v.get("host") for n, v in ledger.topology["nodes"].items()}
    where = shards.port_namespaces(names, ledger.extra, ledger.topology["links"])
    if host is not None:
        wanted = {names.link_port(i, e) for i, lk in enumerate(ledger.topology["links"])
                  for e, node in enumerate(lk["between"]) if on[node] == host}
        where = {i: ns for i, ns in where.items() if i in wanted}
    out = {}
    for ns in set(where.values()):
        with netns.netlink(ns) as ip:
            for link in ip.get_links():
                name = link.get_attr("IFLA_IFNAME")
                if name in where:
                    out[name] = bool(link["flags"] & 1 and link.get_attr("IFLA_CARRIER"))
    return out


def link_states(ledger: Ledger, ports: dict[str, bool] | None = None) -> dict[int, str]:
    """Link index -> "up" when both ends are up and have carrier, else "down" (e.g. set down
    outside the testbed); links with an end missing are left out. `ports`: the ends' states
    when gathered elsewhere (from the hosts of a split topology)."""
    names = ledger.names
    ports = port_states(ledger) if ports is None else ports
    out = {}
    for i in range(len(ledger.topology["links"])):
        ends = [ports.get(names.link_port(i, e)) for e in (0, 1)]
        if any(x is None for x in ends):
            continue
        out[i] = "up" if all(ends) else "down"
    return out


