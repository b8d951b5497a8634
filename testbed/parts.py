"""One host's part of a testbed: its switch daemons, nodes, ports and links, addresses,
switches and shaping (`build_part`). A topology on one machine is one part; a topology split
over hosts is one part per host, built on that host (testbed/hosted.py), the parts sharing
nothing but the tunnels of the links cut between them (testbed/net/hosts.py).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from pyroute2.netlink.exceptions import NetlinkError

from testbed import nodes
from testbed.errors import NetworkError
from testbed.naming import HOST_PORT_OFPORT, NETNS_DIR, Names, link_ofport
from testbed.net import hosts, netns, ofrelay, ovs, shaping, shards
from testbed.net.ethtool import disable_gro, disable_segmentation, disable_tx_checksum
from testbed.net.links import interface_indexes, link_group
from testbed.net.ofrelay import ControllerLink
from testbed.net.probe import probe
from testbed.topology.model import Topology

Progress = Callable[[str], None]


def build_part(topo: Topology, names: Names, host: str | None, place: dict[str, int],
               planned: dict[str, dict], of_port: int, progress: Progress,
               controller: ControllerLink | None = None) -> None:
    """Build what runs on one host of a split topology (`host` None: the whole topology, on
    this machine): its switch daemons, its nodes, their ports and links (and its ends of the
    links cut between hosts), addresses, switches and shaping. A split topology's parts share
    nothing but the tunnels and the controller (reached over TLS through `controller`), so
    each host builds its own, on that host."""
    group = link_group(names)
    mine = [n for n in topo.nodes if host is None or n.host == host]
    ours = {n.name for n in mine}
    daemons = sorted({place[n.name] for n in mine} - {0})
    names.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # a host's own, elsewhere
    if daemons:
        progress(f"switch daemons ({len(daemons)})")
        shards.start(names, daemons, relayed=controller is not None)
        if controller is not None and host is not None:
            progress("relay to the controller (TLS)")
            ofrelay.start(names, host, topo.host(host).netns, daemons, controller)
    for k in nodes.KINDS:
        members = [n for n in mine if n.kind == k]
        if members:
            progress(f"{nodes.of(k).plural} ({len(members)})")
            nodes.of(k).create(topo, names, members)

    cut = {lk.index for lk in topo.cut_links}
    # devices joining this host's switches: their tunnel ends are made where the host's
    # address is (on one machine that is daemon 0's namespace, so nothing to move)
    boards = [n for n in mine if host is not None and not nodes.of(n.kind).local]
    progress(f"veths ({len(mine) + sum(lk.a in ours for lk in topo.links)} pairs)")
    where = switch_ports(topo, names, place, ours)  # daemon -> its switch-side interfaces
    for k in where:  # each made in its daemon's namespace: no moves
        ns = shards.namespace(names, k)
        with netns.netlink(ns) as ip:
            try:
                for n in mine:
                    if place[n.name] == k and n not in boards:
                        nodes.of(n.kind).add_port(ip, names, n, group, planned.get(n.kind, {}))
                for lk in topo.links:
                    if place[lk.a] == k and lk.a in ours and lk.index not in cut:
                        ip.link("add", ifname=names.link_port(lk.index, 0), kind="veth",
                                group=group, peer={"ifname": names.link_port(lk.index, 1),
                                                   "group": group, **_into(names, place[lk.b])})
            except NetlinkError as e:
                raise NetworkError(f"creating veths: {e.args[-1]}") from None
    if cut:
        progress("tunnels to the other hosts")
        hosts.add_tunnels(topo, names, place, group, host)
    if boards:
        progress(f"tunnels to devices ({len(boards)})")
        with netns.netlink(topo.host(host).netns) as ip:
            for n in boards:
                nodes.of(n.kind).add_port(ip, names, n, group, planned.get(n.kind, {}),
                                          into=NETNS_DIR / shards.namespace(names, place[n.name]))
    tunnel_ends = {names.link_port(i, e) for i in cut for e in (0, 1)}
    for k, ifnames in where.items():
        ns = shards.namespace(names, k)
        with (netns.open_socket(ns, socket.AF_INET, socket.SOCK_DGRAM) if ns else
              socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as s:
            for ifname in ifnames:
                disable_tx_checksum(s, ifname)
                disable_segmentation(s, ifname)  # link shapers see frames
                if ifname in tunnel_ends:
                    disable_gro(s, ifname)  # the userspace switch forwards frames only
            for n in mine:
                if place[n.name] == k:
                    nodes.of(n.kind).tune_port(s, names.host_port(n.index))
        with netns.netlink(ns) as ip:
            index = interface_indexes(ip)
            for ifname in ifnames:
                ip.link("set", index=index[ifname], state="up")

    progress("addresses")
    for n in mine:
        nodes.of(n.kind).configure(names, n)

    progress(f"switches ({len(mine)})")
    datapath = ovs.datapath_type()
    bridges: dict[int, list[ovs.Bridge]] = {}
    ports_of = {n.name: [ovs.Port(names.host_port(n.index), HOST_PORT_OFPORT)] for n in mine}
    for lk in topo.links:
        for end, node in enumerate(lk.between):
            if node in ours:
                ports_of[node].append(ovs.Port(names.link_port(lk.index, end),
                                               link_ofport(lk.index)))
    for n in mine:
        bridges.setdefault(place[n.name], []).append(
            ovs.Bridge(names.bridge(n.index), n.index + 1, tuple(ports_of[n.name])))
    with ThreadPoolExecutor(max_workers=4) as pool:  # one OVSDB transaction per daemon
        list(pool.map(lambda k: ovs.add_bridges(
            bridges[k], shards.controller_target(names, k, of_port), datapath,
            shards.db(names, k)), bridges))

    progress(f"shaping ({sum(map(len, where.values())) - len(mine)} egress queues)")
    netem_ok = probe().netem
    shape_of = {names.link_port(lk.index, e): lk.shape for lk in topo.links for e in (0, 1)}
    for k, ifnames in where.items():
        with netns.netlink(shards.namespace(names, k)) as ip:
            index = interface_indexes(ip)
            mine_shaped = [i for i in ifnames if i in shape_of]
            for ifname in mine_shaped:
                shaping.apply(ip, index[ifname], shape_of[ifname], netem_ok)
            held = shaping.read_back(ip, [index[i] for i in mine_shaped])
            for ifname in mine_shaped:
                shaping.verify(held, index[ifname], ifname, shape_of[ifname])

    for k, plan in planned.items():
        here = {n: a for n, a in plan.items() if n in ours}
        if here:
            progress(f"{nodes.of(k).plural} ({len(here)}): attach")
        nodes.of(k).finish(topo, here)


def _into(names: Names, k: int) -> dict:
    """Netlink attribute creating a veth's peer in daemon k's namespace (none for 0)."""
    ns = shards.namespace(names, k)
    return {"net_ns_fd": str(NETNS_DIR / ns)} if ns else {}


def switch_ports(topo: Topology, names: Names, place: dict[str, int],
                 ours: set[str] | None = None) -> dict[int, list[str]]:
    """Switch daemon -> the switch-side interfaces it serves (node ports and link ends), of
    the nodes in `ours` (None: every node)."""
    out: dict[int, list[str]] = {}
    for n in topo.nodes:
        if ours is None or n.name in ours:
            out.setdefault(place[n.name], []).append(names.host_port(n.index))
    for lk in topo.links:
        for end, node in enumerate(lk.between):
            if ours is None or node in ours:
                out.setdefault(place[node], []).append(names.link_port(lk.index, end))
    return out
