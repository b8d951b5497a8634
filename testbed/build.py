"""Bring a Topology to life, step by step, recording it first so that teardown always works.

Checks first (host capabilities, then each node kind's own: images, devices over SSH), then:
state file (with what each kind will change outside this host) -> controller -> nodes
(namespaces, cgroups, containers) -> node ports and link veths -> addresses -> OVS bridges ->
shaping (applied, then read back) -> each kind's last steps (a device's tunnel end) -> routes
confirmed -> all-pairs reachability. Any failure tears down everything made so far before the
error propagates. What differs between kinds of node is asked of the kind (`testbed.nodes`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

from testbed import nodes, parts, proof
from testbed.cleanup import teardown
from testbed.errors import CapabilityError, InputError, NetworkError
from testbed.naming import Names
from testbed.net import cgroups, hosts, ovs, reach, shards, tls
from testbed.net.controller import free_port, start_controller, wait_controller_ready
from testbed.net.ledger import Ledger, known_testbeds, write_private
from testbed.net.links import link_group
from testbed.net.ofrelay import ControllerLink
from testbed.net.probe import NODE_COST_MB, probe
from testbed.routing import Fabric
from testbed.topology.model import Node, Topology

Progress = Callable[[str], None]


def by_kind(topo: Topology) -> dict[str, list[Node]]:
    """Registered kind name -> the topology's nodes of that kind (in build order)."""
    return {k: [n for n in topo.nodes if n.kind == k] for k in nodes.KINDS}


def check_host(topo: Topology, cluster: str | None = None) -> None:
    """Fail before building anything if this host cannot emulate the topology."""
    caps = probe()
    if topo.needs_netem and not caps.netem:
        bad = next(lk for lk in topo.links if lk.shape.needs_netem)
        raise CapabilityError(
            f"{topo.source}: link {bad.a}-{bad.b} asks for delay/jitter/loss, but this kernel "
            "has no netem qdisc (sch_netem); remove delay/jitter/loss or use a host whose "
            "kernel has netem (see `testbed doctor`)")
    check_cgroups(topo)
    if len(topo.nodes) > caps.max_nodes_estimate:
        raise CapabilityError(
            f"{topo.source}: {len(topo.nodes):,} nodes are more than this host can hold now "
            f"(about {caps.max_nodes_estimate:,}: {NODE_COST_MB:g} MB per node, half of the "
            "available memory); use fewer nodes or a larger host (`testbed doctor`)")
    if not caps.ovs:
        raise CapabilityError("Open vSwitch is not running; run `make setup`")
    if topo.hosts:
        hosts.controller_addresses(topo)  # every host's switches can reach the controller
    if topo.hosts and cluster:
        from testbed import hosted

        hosted.check(topo, cluster)  # each host checks its own part
    elif topo.hosts:
        hosts.check(topo, ovs.datapath_type())
    elif cluster:
        raise InputError(f"{topo.source}: --cluster builds a topology split over hosts; this "
                         "one has no `hosts:` (remove --cluster, or add hosts: and host:/"
                         "partition: auto)")


def check_cgroups(topo: Topology) -> None:
    """Every CPU and memory limit asked for can be applied here (never silently dropped)."""
    have = cgroups.available()
    for n in topo.nodes:
        if not nodes.of(n.kind).local:
            continue
        for what, value in (("cpu", n.cpu), ("memory", n.memory_mb)):
            if value is not None and not have.get(what):
                raise CapabilityError(
                    f"{topo.source}: nodes.{n.name}.{what}: this host's cgroups "
                    f"({cgroups.mode()} hierarchy) offer no {what} controller, so the limit "
                    "cannot be applied; remove it or use a host that has it "
                    "(`testbed doctor` lists the controllers)")


def check_nodes(topo: Topology, accept_new_host_keys: bool = False) -> dict[str, dict]:
    """Each kind checks its nodes (images exist, devices answer); kind -> what it learned."""
    return {k: nodes.of(k).check(topo, ns, accept_new_host_keys)
            for k, ns in by_kind(topo).items() if ns}


def up(topo: Topology, progress: Progress = lambda s: None,
       accept_new_host_keys: bool = False, cluster: str | None = None) -> Ledger:
    """Build `topo` on this machine, or split over the hosts of a Ray cluster (`cluster`)."""
    names = Names(topo.name)
    if names.state_dir.exists():
        raise InputError(f"a testbed named {topo.name!r} is already up; "
                         f"run `testbed down --name {topo.name}` first or use --name")
    clash = [t for t in known_testbeds() if t != topo.name and Names(t).tag == names.tag]
    if clash:  # 5 hex digits: rare, but two testbeds must never share interface names
        raise InputError(f"testbed name {topo.name!r} would share interface names with the "
                         f"running testbed {clash[0]!r}; pick another --name")
    check_host(topo, cluster)
    checked = check_nodes(topo, accept_new_host_keys)
    ledger = Ledger(name=topo.name, topology_file=topo.source, topology=topo.to_dict(),
                    of_port=free_port(), tag=names.tag)
    ledger.extra["interface_group"] = link_group(names)
    ledger.save()
    write_private(names.state_dir / "fabric.json", json.dumps(Fabric.of(topo).to_dict()))
    try:
        _build(topo, names, ledger, progress, checked, cluster)
    except BaseException:
        progress("failed: removing what was built")
        if cluster:
            from testbed import hosted

            with contextlib.suppress(Exception):  # the local teardown reports what is left
                hosted.remove_parts(topo.name, topo, cluster)
        teardown(topo.name)
        raise
    ledger.phase = "up"
    ledger.save()
    return ledger


def _build(topo: Topology, names: Names, ledger: Ledger, progress: Progress,
           checked: dict[str, dict], cluster: str | None = None) -> None:
    kinds = {k: ns for k, ns in by_kind(topo).items() if ns}
    planned = {k: nodes.of(k).plan(topo, names, ns, checked.get(k, {}))
               for k, ns in kinds.items()}
    for k, plan in planned.items():  # before any change outside this host: `down` undoes it
        if plan:
            ledger.extra[f"{k}s"] = {n: a.to_dict() for n, a in plan.items()}
    ledger.save()
    links = _controller_links(topo, names, ledger) if topo.hosts else {}
    progress("controller")
    start_controller(ledger)  # first: OVS backs off its reconnect attempts up to 8 s
    if topo.hosts:
        place = hosts.assign(topo, topo.switches_per_daemon)
        ledger.extra["daemon_hosts"] = {str(k): h for k, h in
                                        hosts.daemon_hosts(topo, place).items()}
    else:
        place = shards.assign({n.name: n.kind for n in topo.nodes}, topo.switches_per_daemon,
                              ovs.datapath_type())
    daemons = shards.daemons(place)
    ledger.extra["switch_daemon_of"] = {n: k for n, k in place.items() if k}
    ledger.extra["switch_daemons"] = 1 + len(daemons)
    ledger.save()
    if cluster:  # each host's part built on that host
        from testbed import hosted

        ledger.extra["cluster"] = cluster
        ledger.save()
        ledger.extra["parts"] = hosted.build_parts(topo, names, place, planned, ledger.of_port,
                                                   cluster, progress, links)
    else:
        for host in [h.name for h in topo.hosts] or [None]:
            parts.build_part(topo, names, host, place, planned, ledger.of_port,
                             progress if host is None else
                             lambda s, h=host: progress(f"{h}: {s}"), links.get(host))

    progress("routes")
    wait_controller_ready(ledger)

    ledger.extra["fabric"] = {**prove(topo, names, progress=progress, cluster=cluster),
                              "switch_daemons": 1 + len(daemons)}
    for k, ns in kinds.items():
        nodes.of(k).confirm(names, ns)


def _controller_links(topo: Topology, names: Names, ledger: Ledger) -> dict[str, ControllerLink]:
    """A split topology's hosts reach the controller over TLS (testbed/net/ofrelay.py): a
    port on every address of this machine, a CA of this testbed's own, and per host the
    address it dials and its certificate."""
    controller, creds = tls.issue(topo.name, [h.name for h in topo.hosts])
    controller.write(names.state_dir / "tls", "controller")
    ledger.extra["controller_tls_port"] = port = free_port("0.0.0.0")
    ledger.save()
    return {h: ControllerLink(address, port, creds[h])
            for h, address in hosts.controller_addresses(topo).items()}


def prove(topo: Topology, names: Names, all_pairs: bool = False,
          progress: Progress = lambda s: None, cluster: str | None = None) -> dict:
    """Prove the network forwards (a sample growing linearly with the topology, or every
    pair) and measure what the fabric itself costs: idle RTT over one hop and over the
    longest shortest path. With `cluster`, each host probes from its own nodes, through its
    Ray node. Raises NetworkError naming unreachable pairs."""
    local = {n.name for n in topo.nodes if nodes.of(n.kind).reach_namespace(names, n.name)}
    everyone = [n.name for n in topo.nodes]
    if all_pairs:
        pairs = [(a, b) for a in sorted(local) for b in everyone if a != b]
    else:
        pairs = reach.proof_pairs(everyone, [(lk.a, lk.b) for lk in topo.links], local,
                                  seed=topo.name)
    progress(f"reachability ({len(pairs)} pairs{'' if all_pairs else ': links + sample'})")
    if cluster:
        from testbed import hosted

        missing, latency = hosted.probe_on_hosts(topo, pairs, cluster)
    else:
        missing, latency = proof.probe(topo, names, pairs, None)
    if missing:
        shown = ", ".join(f"{a}->{b}" for a, b in missing[:5])
        raise NetworkError(f"{len(missing)} of {len(pairs)} node pairs checked cannot reach "
                           f"each other ({shown} ...)")
    return {"datapath": ovs.datapath_type(), "pairs_proved": len(pairs),
            "all_pairs": all_pairs, **latency}
