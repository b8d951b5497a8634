"""A topology split over hosts: each host's switches on switch daemons of its own, and every
link cut between two hosts a VXLAN tunnel between the hosts' addresses.

A cut link keeps the shape of any other link: its two ends are interfaces named like a veth
pair's (`t<tag>l<k>a|b`), each the port of its node's switch in that switch's daemon
namespace, shaped on egress there. The ends are VXLAN interfaces made in the namespace that
holds the host's address (the host's own, or `netns:` when a "host" is a namespace on this
machine) and moved into the switch's namespace as they are made: the tunnel's UDP socket
stays with the address, the interface goes with the switch, so `down` removes the interface
with the switch's namespace and nothing is left in the host's.

Each end carries full 1,500-byte frames (the links' MTU like every other link's): the
interface is not bound to a lower device, so the kernel fragments the 1,550-byte outer
packet when the hosts' network has a 1,500-byte MTU; with 1,550 or more (jumbo frames,
recommended) nothing is fragmented (docs/scale-out.md has both measured).
"""

from __future__ import annotations

import hashlib

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from testbed.errors import CapabilityError, NetworkError
from testbed.naming import NETNS_DIR, Names
from testbed.net import netns, shards
from testbed.topology.model import Link, Topology

VXLAN_PORT = 4789
LINK_MTU = 1500


def assign(topo: Topology, per_daemon: int | None) -> dict[str, int]:
    """Node -> switch daemon, each daemon serving nodes of one host only (none on the
    machine's own Open vSwitch, daemon 0: a host's switches must be its own)."""
    per = per_daemon or shards.DEFAULT_PER_DAEMON
    out, k = {}, 0
    for h in topo.hosts:
        mine = [n.name for n in topo.nodes if n.host == h.name]
        for i, n in enumerate(mine):
            out[n] = k + 1 + i // per
        k += -(-len(mine) // per)
    return out


def daemon_hosts(topo: Topology, place: dict[str, int]) -> dict[int, str]:
    """Switch daemon -> the host it runs on."""
    return {k: topo.node(n).host for n, k in place.items()}


def check(topo: Topology, datapath: str, only: str | None = None) -> None:
    """Before anything is built: the hosts (or host `only`, checked on that host) hold the
    addresses the file gives them."""
    if datapath != "netdev":
        raise CapabilityError(f"{topo.source}: hosts: a split topology needs Open vSwitch's "
                              "userspace datapath (every host runs switch daemons of its own); "
                              "this host uses the kernel datapath")
    for h in topo.hosts:
        if only is not None and h.name != only:
            continue
        if h.netns is not None and not (NETNS_DIR / h.netns).exists():
            raise CapabilityError(f"{topo.source}: hosts.{h.name}.netns: network namespace "
                                  f"{h.netns} does not exist; create it (ip netns add "
                                  f"{h.netns}) and give it the address {h.address}")
        with netns.netlink(h.netns) as ip:
            have = {a.get_attr("IFA_ADDRESS") for a in ip.get_addr(family=2)}
        if h.address not in have:
            where = f"namespace {h.netns}" if h.netns else "this machine"
            other = ("" if h.netns or only else " (a host on another machine is built "
                     "through a Ray cluster: `testbed up FILE --cluster HEAD:6379`)")
            raise CapabilityError(f"{topo.source}: hosts.{h.name}.address: {h.address} is not "
                                  f"an address of {where}; set hosts.{h.name}.address to one "
                                  f"of its addresses on the network between the hosts{other}")


def controller_addresses(topo: Topology) -> dict[str, str]:
    """Host -> this machine's address on the route to that host: where its relay reaches the
    controller. Raises CapabilityError naming a host this machine has no route to."""
    out = {}
    with IPRoute() as ip:
        for h in topo.hosts:
            try:
                routes = ip.route("get", dst=h.address)
            except NetlinkError:
                routes = []
            src = routes[0].get_attr("RTA_PREFSRC") if routes else None
            if not src:
                raise CapabilityError(
                    f"{topo.source}: hosts.{h.name}.address: this machine has no route to "
                    f"{h.address}, and host {h.name}'s switches reach the controller here; "
                    "give this machine an address on the network between the hosts")
            out[h.name] = src
    return out


def vni(names: Names, link: Link) -> int:
    """The link's VXLAN network id: from the testbed's name and the link, so two testbeds
    sharing hosts do not share tunnels."""
    digest = hashlib.sha1(f"{names.testbed}/link{link.index}".encode()).hexdigest()
    return int(digest[:6], 16) or 1


def add_tunnels(topo: Topology, names: Names, place: dict[str, int], group: int,
                only: str | None = None) -> None:
    """The ends of cut links on host `only` (None: on every host), each made in its host's
    namespace and moved into its switch daemon's."""
    address = {h.name: h.address for h in topo.hosts}
    by_host: dict[str | None, list[tuple[Link, int]]] = {}
    for lk in topo.cut_links:
        for end, node in enumerate(lk.between):
            by_host.setdefault(topo.node(node).host, []).append((lk, end))
    for host, ends in by_host.items():
        if only is not None and host != only:
            continue
        with netns.netlink(topo.host(host).netns) as ip:
            for lk, end in ends:
                here, there = (topo.node(n).host for n in (lk.between[end], lk.between[1 - end]))
                into = NETNS_DIR / shards.namespace(names, place[lk.between[end]])
                try:
                    ip.link("add", ifname=names.link_port(lk.index, end), kind="vxlan",
                            group=group, vxlan_id=vni(names, lk),
                            vxlan_local=address[here], vxlan_group=address[there],
                            vxlan_port=VXLAN_PORT, mtu=LINK_MTU, net_ns_fd=str(into))
                except NetlinkError as e:
                    raise NetworkError(f"tunnel for link {lk.a}-{lk.b} on host {here}: "
                                       f"{e.args[-1]}") from None
