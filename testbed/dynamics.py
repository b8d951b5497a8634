"""Live changes to a running testbed: a link's rate, delay or loss changed in place (per
direction), links taken down and up, nodes crashed and restarted. Each change is applied,
read back from the kernel and recorded in the testbed's state, so `link ls`, `status` and the
schedulers of later runs see the network as it is now.

A link down sets both ends of its veth pair down (the pair, its shaping and its addresses stay,
so `link up` restores it exactly); the controller sees the port change and routes around it.
A node crash kills the node's processes (a container is killed), and takes its links down;
`node start` brings the container back, wires it in again and restores the links."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

from testbed import nodes
from testbed.errors import InputError
from testbed.lifecycle import resolve
from testbed.net import netns, shaping, shards
from testbed.net.ledger import Ledger
from testbed.net.links import interface_indexes, link_states
from testbed.net.probe import probe
from testbed.topology.model import LinkShape

DIRECTIONS = ("both", "forward", "reverse")  # forward: from the first node named to the second


@dataclass(frozen=True)
class LinkEnd:
    """One direction of a link: the egress interface that shapes it."""

    index: int  # the link's index in the topology
    src: str
    dst: str
    ifname: str


def find_link(ledger: Ledger, a: str, b: str) -> tuple[int, bool]:
    """(index, whether a is the link's first end) of link a-b, or an InputError naming the
    links there are."""
    for i, lk in enumerate(ledger.topology["links"]):
        ends = list(lk["between"])
        if sorted(ends) == sorted([a, b]):
            return i, ends[0] == a
    known = ", ".join("-".join(lk["between"]) for lk in ledger.topology["links"][:20])
    raise InputError(f"no link between {a} and {b} in {ledger.name} (links: {known})")


def ends(ledger: Ledger, a: str, b: str, direction: str = "both") -> list[LinkEnd]:
    if direction not in DIRECTIONS:
        raise InputError(f"direction {direction!r}: use one of {', '.join(DIRECTIONS)}")
    i, a_first = find_link(ledger, a, b)
    first, second = ledger.topology["links"][i]["between"]
    out = [LinkEnd(i, first, second, ledger.names.link_port(i, 0)),
           LinkEnd(i, second, first, ledger.names.link_port(i, 1))]
    if direction == "both":
        return out
    forward = out[0] if a_first else out[1]
    return [forward] if direction == "forward" else [o for o in out if o is not forward]


def shape_now(ledger: Ledger, end: LinkEnd) -> LinkShape:
    """What the testbed last set on this direction (the topology's, until changed)."""
    now = ledger.extra.get("links_now", {}).get(f"{end.index}:{end.src}")
    if now:
        return LinkShape(**now)
    lk = ledger.topology["links"][end.index]
    return LinkShape(lk["bw_mbit"], lk.get("delay_ms", 0.0), lk.get("jitter_ms", 0.0),
                     lk.get("loss_pct", 0.0))


def set_link(name: str | None, a: str, b: str, bw: float | None = None,
             delay: float | None = None, jitter: float | None = None,
             loss: float | None = None, direction: str = "both") -> list[dict]:
    """Change only what is given on link a-b, in place; returns each changed direction as
    the kernel holds it afterwards."""
    ledger = resolve(name)
    chosen = ends(ledger, a, b, direction)
    given = {k: v for k, v in (("bw_mbit", bw), ("delay_ms", delay), ("jitter_ms", jitter),
                                ("loss_pct", loss)) if v is not None}
    if not given:
        raise InputError("nothing to change: give --bw, --delay, --jitter or --loss")
    for key, v in given.items():
        if v < 0 or (key == "bw_mbit" and v == 0) or (key == "loss_pct" and v > 100):
            raise InputError(f"{key} {v:g} is out of range")
    new = {e: replace(shape_now(ledger, e), **given) for e in chosen}
    held = {}
    for (ns, at), mine in _by_namespace(ledger, chosen).items():
        held.update(nodes.on_node_host(ledger, at, _reshape, ns, [
            (e.ifname, shape_now(ledger, e), new[e]) for e in mine]))
    record = ledger.extra.setdefault("links_now", {})
    for e, shape in new.items():
        record[f"{e.index}:{e.src}"] = asdict(shape)
    _sync_topology(ledger, chosen[0].index)
    ledger.save()
    return [_describe(e, held[e.ifname]) for e in chosen]


def _by_namespace(ledger: Ledger, chosen: list[LinkEnd],
                  ) -> dict[tuple[str | None, str], list[LinkEnd]]:
    """Link ends grouped by the namespace of their switch daemon (testbed/net/shards.py), each
    group with a node whose host holds that namespace (the kernel changes are made there)."""
    where = shards.port_namespaces(ledger.names, ledger.extra, ledger.topology["links"])
    out: dict[str | None, list[LinkEnd]] = {}
    for e in chosen:
        out.setdefault(where[e.ifname], []).append(e)
    return {(ns, mine[0].src): mine for ns, mine in out.items()}


# ---- what is done on the host of a group of link ends (testbed.nodes.on_node_host) ---------
def _reshape(ns: str | None, changes: list[tuple[str, LinkShape, LinkShape]]) -> dict:
    """Change each interface's shaping from old to new, read it back and check it;
    interface -> what the kernel holds."""
    netem_ok = probe().netem
    with netns.netlink(ns) as ip:
        index = {name: ip.link_lookup(ifname=name)[0] for name, _, _ in changes}
        for name, old, new in changes:
            shaping.change(ip, index[name], old, new, netem_ok)
        now = shaping.read_back(ip, list(index.values()))
        for name, _, new in changes:
            shaping.verify(now, index[name], name, new)
    return {name: now[index[name]] for name, _, _ in changes}


def _set_up(ns: str | None, ifnames: list[str], up: bool) -> None:
    with netns.netlink(ns) as ip:
        for name in ifnames:
            ip.link("set", index=ip.link_lookup(ifname=name)[0], state="up" if up else "down")


def _read_shapes(ns: str | None, ifnames: list[str]) -> dict[str, dict]:
    with netns.netlink(ns) as ip:
        index = interface_indexes(ip)
        now = shaping.read_back(ip, [index[n] for n in ifnames if n in index])
    return {n: now.get(index.get(n, -1), {}) for n in ifnames}


def _sync_topology(ledger: Ledger, i: int) -> None:
    """The recorded topology (what schedulers plan with) follows the change; a link whose
    directions differ is recorded at its slower direction's rate."""
    lk = ledger.topology["links"][i]
    a, b = lk["between"]
    both = [shape_now(ledger, LinkEnd(i, src, dst, "")) for src, dst in ((a, b), (b, a))]
    rates = [s.bw_mbit for s in both if s.bw_mbit is not None]
    lk["bw_mbit"] = min(rates) if len(rates) == 2 else (rates[0] if rates else None)
    lk["delay_ms"] = max(s.delay_ms for s in both)
    lk["jitter_ms"] = max(s.jitter_ms for s in both)
    lk["loss_pct"] = max(s.loss_pct for s in both)


def _describe(e: LinkEnd, held: dict) -> dict:
    rate = held.get("rate_bps")
    return {"link": [e.src, e.dst], "interface": e.ifname,
            "bw_mbit": rate / 1e6 if rate else None, "leaf": held.get("leaf"),
            **held.get("netem", {})}


def set_link_state(name: str | None, a: str, b: str, up: bool) -> None:
    """Take link a-b down (both directions; nothing is removed) or bring it back up."""
    ledger = resolve(name)
    i, _ = find_link(ledger, a, b)
    _set_ports(ledger, [i], up)
    down = set(ledger.extra.get("links_down", []))
    ledger.extra["links_down"] = sorted(down - {i} if up else down | {i})
    ledger.save()


def _set_ports(ledger: Ledger, links: list[int], up: bool) -> None:
    chosen = [e for i in links for e in ends(ledger, *ledger.topology["links"][i]["between"])]
    for (ns, at), mine in _by_namespace(ledger, chosen).items():
        nodes.on_node_host(ledger, at, _set_up, ns, [e.ifname for e in mine], up)


def links(name: str | None) -> list[dict]:
    """Every link with its state and, per direction, the shaping the kernel holds now."""
    ledger = resolve(name)
    if ledger.extra.get("cluster"):  # each host reads its own link ends
        from testbed import hosted

        states = link_states(ledger, hosted.status_on_hosts(ledger)[0])
    else:
        states = link_states(ledger)
    out = []
    all_ends = [e for lk in ledger.topology["links"] for e in ends(ledger, *lk["between"])]
    held: dict[str, dict] = {}
    for (ns, at), group in _by_namespace(ledger, all_ends).items():
        held.update(nodes.on_node_host(ledger, at, _read_shapes, ns,
                                       [e.ifname for e in group]))
    for i, lk in enumerate(ledger.topology["links"]):
        mine = [e for e in all_ends if e.index == i]
        out.append({"between": list(lk["between"]), "state": states.get(i, "missing"),
                    "directions": [_describe(e, held.get(e.ifname, {})) for e in mine]})
    return out


def stop_node(name: str | None, node: str) -> dict:
    """Crash a node: its processes are killed (a container is killed) and its links go down,
    so the controller routes around it. Returns what was done."""
    ledger = resolve(name)
    info = ledger.topology["nodes"].get(node)
    if info is None:
        raise InputError(f"unknown node {node!r} (nodes: {', '.join(ledger.topology['nodes'])})")
    if node in ledger.extra.get("stopped", {}):
        raise InputError(f"node {node} is already stopped; `testbed node start {node}`")
    mine = [i for i, lk in enumerate(ledger.topology["links"]) if node in lk["between"]]
    already = set(ledger.extra.get("links_down", []))
    taken = [i for i in mine if i not in already]
    _set_ports(ledger, taken, up=False)
    killed = nodes.on_node_host(ledger, node, nodes.of_node(ledger, node).crash, ledger, node)
    ledger.extra.setdefault("stopped", {})[node] = {"links": taken, "at": time.time()}
    ledger.save()
    return {"node": node, "links_down": len(taken), "killed": killed}


def start_node(name: str | None, node: str) -> dict:
    """Bring a crashed node back: a container restarts and is wired in again, its links come
    back up. Returns what was done."""
    ledger = resolve(name)
    stopped = ledger.extra.get("stopped", {})
    if node not in stopped:
        raise InputError(f"node {node} is not stopped (`testbed node stop {node}` crashes it)")
    nodes.on_node_host(ledger, node, nodes.of_node(ledger, node).restart, ledger, node)
    _set_ports(ledger, stopped[node]["links"], up=True)
    entry = stopped.pop(node)
    ledger.save()
    return {"node": node, "links_up": len(entry["links"]),
            "down_s": round(time.time() - entry["at"], 3)}
