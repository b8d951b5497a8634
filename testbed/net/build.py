"""Bring a Topology to life, step by step, recording it first so that teardown always works.

Checks first (host capabilities, container images, devices over SSH), then: state file (with
each device's attachment plan) -> controller -> namespaces (host nodes) -> cgroups ->
containers (docker nodes; their namespaces named like host nodes') -> veths (node ports, links)
and VXLAN node ports (devices) -> addresses -> OVS bridges -> shaping (applied, then read back)
-> devices' ends (tunnel, shaping, deploy) -> routes confirmed -> all-pairs reachability.
Any failure tears down everything made so far before the error propagates.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from testbed import images
from testbed.devices import attach as dev_attach
from testbed.devices.attach import DeviceReport
from testbed.devices.ssh import Endpoint, Session
from testbed.errors import CapabilityError, InputError, NetworkError, TestbedError
from testbed.naming import HOST_PORT_OFPORT, NETNS_DIR, Names, link_ofport
from testbed.net import apisock, cgroups, containers, netns, ovs, reach, shaping
from testbed.net.cleanup import teardown
from testbed.net.ethtool import disable_gro, disable_tx_checksum
from testbed.net.ledger import Ledger, ProcessRecord, known_testbeds, write_private
from testbed.net.probe import NODE_COST_MB, probe
from testbed.routing import Fabric
from testbed.topology.model import SUBNET, Topology

Progress = Callable[[str], None]
CONTROLLER_READY_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def link_group(names: Names) -> int:
    """The interface group all of this testbed's root-namespace interfaces share."""
    return int(names.tag[1:], 16) | 0x40000000


def interface_indexes(ip: IPRoute) -> dict[str, int]:
    """Name -> index of every interface, from one dump (link_lookup dumps all links per call)."""
    return {link.get_attr("IFLA_IFNAME"): link["index"] for link in ip.get_links()}


def check_host(topo: Topology) -> None:
    """Fail before building anything if this host cannot emulate the topology."""
    caps = probe()
    if topo.needs_netem and not caps.netem:
        bad = next(lk for lk in topo.links if lk.shape.needs_netem)
        raise CapabilityError(
            f"{topo.source}: link {bad.a}-{bad.b} asks for delay/jitter/loss, but this kernel "
            "has no netem qdisc (sch_netem); remove delay/jitter/loss or use a host whose "
            "kernel has netem (see `testbed doctor`)")
    check_images(topo)
    check_cgroups(topo)
    if len(topo.nodes) > caps.max_nodes_estimate:
        raise CapabilityError(
            f"{topo.source}: {len(topo.nodes):,} nodes are more than this host can hold now "
            f"(about {caps.max_nodes_estimate:,}: {NODE_COST_MB:g} MB per node, half of the "
            "available memory); use fewer nodes or a larger host (`testbed doctor`)")
    if not caps.ovs:
        raise CapabilityError("Open vSwitch is not running; run `make setup`")


def check_cgroups(topo: Topology) -> None:
    """Every CPU and memory limit asked for can be applied here (never silently dropped)."""
    have = cgroups.available()
    for n in topo.nodes:
        if n.kind == "device":
            continue
        for what, value in (("cpu", n.cpu), ("memory", n.memory_mb)):
            if value is not None and not have.get(what):
                raise CapabilityError(
                    f"{topo.source}: nodes.{n.name}.{what}: this host's cgroups "
                    f"({cgroups.mode()} hierarchy) offer no {what} controller, so the limit "
                    "cannot be applied; remove it or use a host that has it "
                    "(`testbed doctor` lists the controllers)")


def check_images(topo: Topology) -> None:
    """Every docker node's image exists and is current (needs a running engine)."""
    wanted = sorted({n.image for n in topo.nodes if n.kind == "docker"})
    if not wanted:
        return
    images.client()  # a CapabilityError naming the fix when there is no engine
    for image in wanted:
        state = images.image_state(image)
        node = next(n.name for n in topo.nodes if n.image == image)
        plain, _, tag = image.partition(":")
        if state == "missing" and (plain not in images.recipes() or tag not in ("", "latest")):
            raise InputError(
                f"{topo.source}: nodes.{node}.image: no Docker image {image!r} and no recipe "
                f"images/{plain}/; fix: use a recipe ({', '.join(images.recipes())}) or an "
                "image from `docker images`")
        if state in ("missing", "stale"):
            why = "is not built" if state == "missing" else \
                "was built from older images/ or workloads/ files"
            raise InputError(f"{topo.source}: nodes.{node}.image: {image} {why}; "
                             f"fix: run `testbed image build {plain}`")


def check_devices(topo: Topology, accept_new_host_keys: bool = False,
                  ) -> dict[str, DeviceReport]:
    """Log in to every device node and check it can join; one error lists every problem."""
    devices = [n for n in topo.nodes if n.kind == "device"]

    def check(n) -> tuple[str, DeviceReport | None, str | None]:
        try:
            with Session(Endpoint.of(n.name, n.ssh), accept_new_host_keys, retry_for_s=3) as s:
                report = dev_attach.probe(s)
        except TestbedError as e:
            return n.name, None, str(e)
        missing = f"{s.ep.where} lacks: {'; '.join(report.missing)}" if report.missing else None
        return n.name, report, missing

    with ThreadPoolExecutor(max(1, min(8, len(devices)))) as pool:  # boards answer in parallel
        results = list(pool.map(check, devices))
    reports = {node: r for node, r, _ in results if r is not None}
    problems = [p for _, _, p in results if p]
    if problems:
        raise CapabilityError(f"{topo.source}: " + "\n".join(problems) +
                              "\n(`testbed doctor FILE` checks devices without building)")
    return reports


def device_egress_mbit(topo: Topology, node: str) -> float | None:
    """The device's own egress cap: its fastest link's rate (None if any link is unshaped)."""
    rates = [lk.shape.bw_mbit for lk in topo.links if node in lk.between]
    return None if not rates or None in rates else max(rates)


def up(topo: Topology, progress: Progress = lambda s: None,
       accept_new_host_keys: bool = False) -> Ledger:
    names = Names(topo.name)
    if names.state_dir.exists():
        raise InputError(f"a testbed named {topo.name!r} is already up; "
                         f"run `testbed down --name {topo.name}` first or use --name")
    clash = [t for t in known_testbeds() if t != topo.name and Names(t).tag == names.tag]
    if clash:  # 5 hex digits: rare, but two testbeds must never share interface names
        raise InputError(f"testbed name {topo.name!r} would share interface names with the "
                         f"running testbed {clash[0]!r}; pick another --name")
    check_host(topo)
    reports = check_devices(topo, accept_new_host_keys)
    ledger = Ledger(name=topo.name, topology_file=topo.source, topology=topo.to_dict(),
                    of_port=free_port(), tag=names.tag)
    ledger.extra["interface_group"] = link_group(names)
    ledger.save()
    write_private(names.state_dir / "fabric.json", json.dumps(Fabric.of(topo).to_dict()))
    try:
        _build(topo, names, ledger, progress, reports)
    except BaseException:
        progress("failed: removing what was built")
        teardown(topo.name)
        raise
    ledger.phase = "up"
    ledger.save()
    return ledger


def _build(topo: Topology, names: Names, ledger: Ledger, progress: Progress,
           reports: dict[str, DeviceReport]) -> None:
    group = link_group(names)
    devices = {n.name: dev_attach.plan(names, n, reports[n.name],
                                       device_egress_mbit(topo, n.name))
               for n in topo.nodes if n.kind == "device"}
    ledger.extra["devices"] = {k: a.to_dict() for k, a in devices.items()}
    ledger.save()  # before any change on a device, so that `down` can undo it
    progress("controller")
    start_controller(ledger)  # first: OVS backs off its reconnect attempts up to 8 s

    hosts = [n for n in topo.nodes if n.kind == "host"]
    progress(f"namespaces ({len(hosts)})")
    netns.create([names.netns(n.name) for n in hosts])
    for n in topo.nodes:
        if n.kind != "device":
            cgroups.create(names, n.name, n.cpu, n.memory_mb)
    docker_nodes = [n for n in topo.nodes if n.kind == "docker"]
    if docker_nodes:
        progress(f"containers ({len(docker_nodes)})")
        share = {n.name: names.share_dir(n.name) for n in docker_nodes}
        for d in share.values():
            d.mkdir(parents=True, exist_ok=True)
        containers.start(names, docker_nodes, share)

    progress(f"veths ({len(topo.nodes) + len(topo.links)} pairs)")
    with IPRoute() as ip:
        try:
            for n in topo.nodes:
                if n.kind == "device":  # its node port is the tunnel's end on this host
                    a = devices[n.name]
                    ip.link("add", ifname=names.host_port(n.index), kind="vxlan", group=group,
                            vxlan_id=a.vni, vxlan_local=a.host_ip, vxlan_group=a.device_ip,
                            vxlan_port=dev_attach.VXLAN_PORT,
                            mtu=1500 - dev_attach.VXLAN_OVERHEAD)
                    continue
                ip.link("add", ifname=names.host_port(n.index), kind="veth", group=group,
                        peer={"ifname": "eth0", "net_ns_fd": str(NETNS_DIR / names.netns(n.name))})
            for lk in topo.links:
                ip.link("add", ifname=names.link_port(lk.index, 0), kind="veth", group=group,
                        peer={"ifname": names.link_port(lk.index, 1), "group": group})
        except NetlinkError as e:
            raise NetworkError(f"creating veths: {e.args[-1]}") from None
        root_ifs = [names.host_port(n.index) for n in topo.nodes]
        root_ifs += [names.link_port(lk.index, e) for lk in topo.links for e in (0, 1)]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for ifname in root_ifs:
                disable_tx_checksum(s, ifname)
            for n in topo.nodes:
                if n.kind == "device":
                    disable_gro(s, names.host_port(n.index))
        index = interface_indexes(ip)
        for ifname in root_ifs:
            ip.link("set", index=index[ifname], state="up")

    progress("addresses")
    for n in topo.nodes:
        if n.kind == "device":
            continue
        ns = names.netns(n.name)
        with netns.netlink(ns) as ip:
            eth0 = ip.link_lookup(ifname="eth0")[0]
            ip.link("set", index=eth0, address=n.mac)
            ip.addr("add", index=eth0, address=n.ip, prefixlen=SUBNET.prefixlen)
            ip.link("set", index=eth0, state="up")
            ip.link("set", index=ip.link_lookup(ifname="lo")[0], state="up")
        with netns.open_socket(ns, socket.AF_INET, socket.SOCK_DGRAM) as s:
            disable_tx_checksum(s, "eth0")

    progress(f"switches ({len(topo.nodes)})")
    bridges = []
    for n in topo.nodes:
        ports = [ovs.Port(names.host_port(n.index), HOST_PORT_OFPORT)]
        for lk in topo.links:
            if n.name in lk.between:
                end = 0 if lk.a == n.name else 1
                ports.append(ovs.Port(names.link_port(lk.index, end), link_ofport(lk.index)))
        bridges.append(ovs.Bridge(names.bridge(n.index), n.index + 1, tuple(ports)))
    ovs.add_bridges(bridges, f"tcp:127.0.0.1:{ledger.of_port}")

    progress(f"shaping ({2 * len(topo.links)} egress queues)")
    netem_ok = probe().netem
    with IPRoute() as ip:
        index = interface_indexes(ip)
        for lk in topo.links:
            for end in (0, 1):
                shaping.apply(ip, index[names.link_port(lk.index, end)], lk.shape, netem_ok)
        held = shaping.read_back(ip, [index[names.link_port(lk.index, e)]
                                      for lk in topo.links for e in (0, 1)])
        for lk in topo.links:
            for end in (0, 1):
                ifname = names.link_port(lk.index, end)
                shaping.verify(held, index[ifname], ifname, lk.shape)

    if devices:
        progress(f"devices ({len(devices)}): tunnel, shaping, deploy")

        def attach(a: dev_attach.Attachment) -> None:
            with Session(Endpoint.of(a.node, topo.node(a.node).ssh), retry_for_s=10) as s:
                dev_attach.attach(s, a)

        with ThreadPoolExecutor(min(8, len(devices))) as pool:
            list(pool.map(attach, devices.values()))

    progress("routes")
    wait_controller_ready(ledger)

    progress(f"reachability ({len(topo.nodes) * (len(topo.nodes) - 1)} pairs)")
    missing = reach.unreachable_pairs(
        {n.name: (names.netns(n.name) if n.kind != "device" else None, n.ip)
         for n in topo.nodes})
    if missing:
        shown = ", ".join(f"{a}->{b}" for a, b in missing[:5])
        raise NetworkError(f"{len(missing)} node pairs cannot reach each other ({shown} ...)")


def start_controller(ledger: Ledger) -> None:
    """Start the os-ken controller as a detached process that outlives `testbed up`."""
    log = open(ledger.names.state_dir / "controller.log", "ab")  # noqa: SIM115 (child keeps it)
    proc = subprocess.Popen(
        [sys.executable, "-m", "controllers.run", str(ledger.names.state_dir),
         str(ledger.of_port)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    log.close()
    ledger.controller = ProcessRecord.of(proc.pid)
    ledger.save()


def controller_health(ledger: Ledger, timeout: float = 2.0) -> dict | None:
    try:
        code, body = apisock.request(ledger.names.api_socket, "GET", "/health", timeout=timeout)
    except OSError:
        return None
    return body if code == 200 and isinstance(body, dict) else None


def wait_controller_ready(ledger: Ledger) -> None:
    deadline = time.monotonic() + CONTROLLER_READY_TIMEOUT_S
    health = None
    while time.monotonic() < deadline:
        if ledger.controller and not ledger.controller.alive():
            log = (ledger.names.state_dir / "controller.log").read_text()[-1500:]
            raise NetworkError(f"the controller exited during start-up:\n{log}")
        health = controller_health(ledger)
        if health and health["ready"] == health["expected"]:
            return
        time.sleep(0.1)
    raise NetworkError(f"the controller did not configure all switches in "
                       f"{CONTROLLER_READY_TIMEOUT_S:.0f}s (last health: {health})")


def link_states(ledger: Ledger) -> dict[int, str]:
    """Link index -> "up" when both ends of its veth pair are up and have carrier, else
    "down" (e.g. set down outside the testbed), read from the kernel in one dump."""
    names = ledger.names
    with IPRoute() as ip:
        seen = {link.get_attr("IFLA_IFNAME"): link for link in ip.get_links()}
    out = {}
    for i in range(len(ledger.topology["links"])):
        ends = [seen.get(names.link_port(i, e)) for e in (0, 1)]
        if any(x is None for x in ends):
            continue
        ok = all(x["flags"] & 1 and x.get_attr("IFLA_CARRIER") for x in ends)
        out[i] = "up" if ok else "down"
    return out


def controller_ok(ledger: Ledger) -> bool:
    """The controller runs, answers and has every switch configured."""
    if not (ledger.controller and ledger.controller.alive()):
        return False
    health = controller_health(ledger)
    return bool(health and health["ready"] == health["expected"])


def ensure_controller(ledger: Ledger, patience_s: float = 3.0) -> bool:
    """Restart the controller if it is dead, or alive but not answering or stuck with a switch
    unconfigured for `patience_s`; returns whether it was restarted."""
    deadline = time.monotonic() + patience_s
    while not controller_ok(ledger):
        if not (ledger.controller and ledger.controller.alive()) or \
                time.monotonic() > deadline:
            restart_controller(ledger)
            return True
        time.sleep(0.1)
    return False


def restart_controller(ledger: Ledger) -> None:
    """Start a fresh controller for a running network (flows are re-installed from its file).
    The API socket keeps its path, so clients reach the new controller without being told."""
    if ledger.controller and ledger.controller.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(ledger.controller.pid, 9)
        for _ in range(100):
            if not ledger.controller.alive():
                break
            time.sleep(0.02)
    ledger.of_port = free_port()
    names = ledger.names
    n = len(ledger.topology["nodes"])
    ovs.set_controller([names.bridge(i) for i in range(n)], f"tcp:127.0.0.1:{ledger.of_port}")
    start_controller(ledger)
    wait_controller_ready(ledger)
