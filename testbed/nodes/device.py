"""Device nodes: real boards (Jetsons, Raspberry Pis) that join over SSH. Their node port on
this host is a VXLAN tunnel to the board; shaping, per-flow rates and statistics are done on
the board with tc and /proc over SSH; files travel by SFTP and traces are moved from the
board's clock onto the testbed's."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pyroute2 import IPRoute

from testbed.devices import attach as dev_attach
from testbed.devices.remote import local_argv
from testbed.devices.ssh import Endpoint, Session
from testbed.devices.stats import ClockOffset, Collector, clock_offset
from testbed.errors import CapabilityError, InputError, NetworkError, TestbedError
from testbed.htb import FlowRate
from testbed.naming import Names
from testbed.net.ethtool import disable_gro
from testbed.net.ledger import Ledger
from testbed.nodes.base import Files, NodeKind, Preexec
from testbed.topology.model import Node, Topology


def session(ledger: Ledger, node: str, retry_for_s: float = 10) -> Session:
    return Session(Endpoint.of(node, ledger.topology["nodes"][node]["ssh"]),
                   retry_for_s=retry_for_s)


class DeviceFiles(Files):
    """Files go by SFTP into the testbed's directory on the board; traces come back with their
    timestamps moved from the board's clock to the testbed's."""

    def __init__(self, ledger: Ledger, node: str) -> None:
        self.session = session(ledger, node, retry_for_s=15)
        self.dir = ledger.extra["devices"][node]["deploy_dir"] + "/run"
        self.session.run(f"mkdir -p '{self.dir}'", check=True)
        self.offset: ClockOffset = clock_offset(self.session)

    def put(self, local: Path, text: str) -> str:
        local.write_text(text)
        with self.session.sftp() as sftp:
            sftp.put(str(local), f"{self.dir}/{local.name}")
        return f"{self.dir}/{local.name}"

    def trace_path(self, local: Path) -> str:
        return f"{self.dir}/{local.name}"

    def node_clock(self, t: float) -> float:
        return t + self.offset.offset_s

    def testbed_clock(self, t: float) -> float:
        return t - self.offset.offset_s

    def fetch(self, local: Path) -> None:
        try:
            with self.session.sftp() as sftp:
                try:
                    sftp.get(f"{self.dir}/{local.name}", str(local))
                except FileNotFoundError:
                    return
                sftp.remove(f"{self.dir}/{local.name}")
        except TestbedError:  # the device went away: its job already failed with the reason
            return
        lines = local.read_text().splitlines()
        if local.suffix == ".jsonl":
            fixed = [json.dumps(on_testbed_clock(json.loads(ln), self.offset.offset_s))
                     for ln in lines if ln.strip()]
        else:  # CSV traces: nanoseconds first
            shift = int(self.offset.offset_s * 1e9)
            fixed = [f"{int(ts) - shift},{rest}" for ts, _, rest in
                     (ln.partition(",") for ln in lines) if ts.lstrip("-").isdigit()]
        local.write_text("".join(f"{ln}\n" for ln in fixed))


def on_testbed_clock(record: dict, offset_s: float) -> dict:
    """A JSON-lines trace record with its wall-clock times (seconds, in the fields `start`,
    `end` and `t_*`, the convention of workloads/) moved from the board's clock."""
    return {k: v - offset_s if (k in ("start", "end") or k.startswith("t_"))
            and isinstance(v, (int, float)) and not isinstance(v, bool) else v
            for k, v in record.items()}


def egress_mbit(topo: Topology, node: str) -> float | None:
    """The device's own egress cap: its fastest link's rate (None if any link is unshaped)."""
    rates = [lk.shape.bw_mbit for lk in topo.links if node in lk.between]
    return None if not rates or None in rates else max(rates)


class Device(NodeKind):
    name = "device"
    plural = "devices"
    local = False

    # ---- up -----------------------------------------------------------------------------
    def check(self, topo: Topology, nodes: list[Node], accept_new_host_keys: bool) -> dict:
        """Log in to every device and check it can join; one error lists every problem."""

        def check(n: Node) -> tuple[str, dev_attach.DeviceReport | None, str | None]:
            try:
                with Session(Endpoint.of(n.name, n.ssh), accept_new_host_keys,
                             retry_for_s=3) as s:
                    report = dev_attach.probe(s)
                    missing = list(report.missing)
                    if n.host:  # its tunnel goes to the host whose switch it joins
                        address = topo.host(n.host).address
                        if s.run(f"ip route get {address}", timeout=10).code != 0:
                            missing.append(f"a route to host {n.host}'s address {address} "
                                           f"(its tunnel ends there; or set nodes.{n.name}.host "
                                           "to a host it reaches)")
            except TestbedError as e:
                return n.name, None, str(e)
            lacks = f"{s.ep.where} lacks: {'; '.join(missing)}" if missing else None
            return n.name, report, lacks

        with ThreadPoolExecutor(max(1, min(8, len(nodes)))) as pool:  # in parallel
            results = list(pool.map(check, nodes))
        problems = [p for _, _, p in results if p]
        if problems:
            raise CapabilityError(f"{topo.source}: " + "\n".join(problems) +
                                  "\n(`testbed doctor FILE` checks devices without building)")
        return {node: r for node, r, _ in results}

    def diagnose(self, nodes: list[Node], accept_new_host_keys: bool) -> dict[str, dict]:
        out = {}
        for n in nodes:
            try:
                with Session(Endpoint.of(n.name, n.ssh), accept_new_host_keys,
                             retry_for_s=3) as s:
                    rep = dev_attach.probe(s)
                out[n.name] = {"reachable": True, "missing": list(rep.missing), **rep.facts}
            except TestbedError as e:
                out[n.name] = {"reachable": False, "missing": [str(e)]}
        return out

    def plan(self, topo: Topology, names: Names, nodes: list[Node], checked: dict) -> dict:
        return {n.name: dev_attach.plan(names, n, checked[n.name], egress_mbit(topo, n.name),
                                        topo.host(n.host).address if n.host else None)
                for n in nodes}

    def create(self, topo: Topology, names: Names, nodes: list[Node]) -> None:
        pass  # the board exists; its end of the tunnel is made in `finish`

    def add_port(self, ip: IPRoute, names: Names, node: Node, group: int, planned: dict,
                 into: Path | None = None) -> None:
        a = planned[node.name]  # the node port is the tunnel's end on this host
        ip.link("add", ifname=names.host_port(node.index), kind="vxlan", group=group,
                vxlan_id=a.vni, vxlan_local=a.host_ip, vxlan_group=a.device_ip,
                vxlan_port=dev_attach.VXLAN_PORT, mtu=1500 - dev_attach.VXLAN_OVERHEAD,
                **({"net_ns_fd": str(into)} if into else {}))

    def tune_port(self, sock: socket.socket, ifname: str) -> None:
        disable_gro(sock, ifname)

    def configure(self, names: Names, node: Node) -> None:
        pass  # the board's address is set on its end of the tunnel

    def finish(self, topo: Topology, planned: dict) -> None:
        def attach(a: dev_attach.Attachment) -> None:
            with Session(Endpoint.of(a.node, topo.node(a.node).ssh), retry_for_s=10) as s:
                dev_attach.attach(s, a)

        if planned:
            with ThreadPoolExecutor(min(8, len(planned))) as pool:
                list(pool.map(attach, planned.values()))

    def crash(self, ledger: Ledger, node: str) -> int:
        """A real board is not killed: it is lost (its links go down, as when it drops off
        the Wi-Fi); its processes go on."""
        return 0

    def reach_namespace(self, names: Names, node: str) -> str | None:
        return None

    # ---- down ---------------------------------------------------------------------------
    def teardown(self, testbed: str, ledger: Ledger | None) -> str:
        """Undo every device's tunnel, shaping and deploy directory (from the recorded plan)."""
        if not ledger or not ledger.extra.get("devices"):
            return ""

        def one(item: tuple[str, dict]) -> str | None:
            node, a = item
            try:
                with session(ledger, node, retry_for_s=5) as s:
                    dev_attach.detach(s, a["iface"], a["deploy_dir"], a["sudo"])
                return None
            except Exception as e:  # one unreachable device must not stop the others
                return (f"{e} (run `testbed down --name {ledger.name}` again once it is "
                        "reachable, or with --force to give it up)")

        items = list(ledger.extra["devices"].items())
        with ThreadPoolExecutor(min(8, len(items))) as pool:
            outcome = dict(zip([n for n, _ in items], pool.map(one, items), strict=True))
        failed = [why for why in outcome.values() if why]
        if failed:
            raise NetworkError("; ".join(failed))
        return ", ".join(n for n, why in outcome.items() if not why)

    # ---- running ------------------------------------------------------------------------
    def command(self, ledger: Ledger, node: str, argv: list[str], tie_to_parent: bool,
                unprivileged: bool) -> tuple[list[str], Preexec]:
        if unprivileged:
            raise InputError(f"node {node} is a device: commands run as its SSH user there; "
                             "--unprivileged is for host and docker nodes")
        deploy = ledger.extra["devices"][node]["deploy_dir"]  # over SSH, through a relay
        return local_argv(ledger.topology["nodes"][node]["ssh"], node, argv,
                          cwd=deploy), lambda: None

    def workload_command(self, ledger: Ledger, node: str, program: str,
                         ) -> tuple[list[str], dict]:
        code = ledger.extra["devices"][node]["deploy_dir"] + "/workloads"  # deployed by `up`
        return ["python3", f"{code}/{program}"], {}

    def files(self, ledger: Ledger, node: str, unprivileged: bool) -> Files:
        return DeviceFiles(ledger, node)  # tasks run as the SSH user anyway

    def status(self, ledger: Ledger, nodes: list[str]) -> dict[str, dict]:
        """Whether each device answers over SSH now, and its end of the tunnel."""
        out = {}
        for node in nodes:
            att = ledger.extra.get("devices", {}).get(node)
            ssh = ledger.topology["nodes"][node]["ssh"]
            try:
                with session(ledger, node, retry_for_s=0) as s:
                    tunnel = dev_attach.tunnel_state(s, att["iface"]) if att else "missing"
                dev = {"reachable": True, "tunnel": tunnel, "host": ssh["host"]}
            except TestbedError as e:
                dev = {"reachable": False, "tunnel": "unknown", "host": ssh["host"],
                       "error": str(e)}
            out[node] = {"device": dev, "present": dev["tunnel"] == "up", "oom_kills": 0}
        return out

    def set_limits(self, ledger: Ledger, node: str, cpu: float | None, memory_mb: int | None,
                   current_cpu: float | None) -> None:
        raise InputError(f"node {node} is a device: its CPU and memory are the board's own "
                         "and cannot be changed by the testbed")

    def usage(self, ledger: Ledger, node: str) -> tuple[float, int] | None:
        return None  # sampled over SSH by `collector`: board_stats.csv

    def collector(self, ledger: Ledger, node: str, interval_s: float) -> Collector:
        return Collector(session(ledger, node, retry_for_s=5), interval_s)

    # ---- per-flow rates, on the tunnel's egress with tc over SSH --------------------------
    def set_flow_rates(self, ledger: Ledger, node: str, flows: list[FlowRate],
                       ) -> tuple[dict[int, int], set[int]]:
        att = ledger.extra["devices"][node]
        with session(ledger, node) as s:
            s.run(dev_attach.flow_rates_script(att["iface"], att["sudo"], flows), check=True)
            return dev_attach.parse_classes(s.run(
                dev_attach.read_classes_script(att["iface"], att["sudo"]), check=True).out)

    def remove_flow_rates(self, ledger: Ledger, node: str, flows: list[FlowRate]) -> None:
        att = ledger.extra["devices"][node]
        with session(ledger, node) as s:
            s.run(dev_attach.remove_flow_rates_script(att["iface"], att["sudo"], [
                (f.minor, f.prio) for f in flows]))

    def flow_rates(self, ledger: Ledger, node: str) -> tuple[dict[int, int], set[int]]:
        att = ledger.extra["devices"][node]
        with session(ledger, node) as s:
            return dev_attach.parse_classes(s.run(
                dev_attach.read_classes_script(att["iface"], att["sudo"]), check=True).out)
