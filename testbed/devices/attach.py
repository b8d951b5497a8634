"""Joining a physical device to the fabric, and leaving it as it was found.

The device's end: a VXLAN interface over the management network, addressed in the testbed's
subnet, its egress shaped with HTB like an emulated link end; the workload code copied by SFTP
into ~/.edge-testbed/<testbed>/. The host's end (made by the build, see testbed/net/build.py)
is a VXLAN interface that is the node port of the device's own OVS switch, so the controller
routes to and from the device like any node. Every change on the device is named from the
testbed (interface `t<tag>d<index>`, that one directory), so `down` can undo exactly it.
"""

from __future__ import annotations

import hashlib
import re
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from pyroute2 import IPRoute

from testbed.devices.ssh import Endpoint, Session, quote
from testbed.errors import CapabilityError, NetworkError
from testbed.htb import htb_params, leaf_handle, tbf_leaf_tc
from testbed.naming import Names
from testbed.topology.model import SUBNET, Node

VXLAN_PORT = 4789
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IP 20 + UDP 8 + VXLAN 8
MIN_PYTHON = (3, 8)
DEPLOY_BASE = ".edge-testbed"
WORKLOADS = Path(__file__).resolve().parent.parent.parent / "workloads"

# Runs on the device as its SSH user; S is how it gains root ("" when it is root). Nothing is
# printed while the scratch VXLAN interface exists: if `up` is killed then, the next write would
# end the shell (SIGPIPE) before it removed the interface, which no testbed's `down` could name.
PROBE = r"""
if [ "$(id -u)" = 0 ]; then S=; echo root=yes; else S="sudo -n"; fi
echo "kernel=$(uname -r)"; echo "home=$HOME"
command -v python3 >/dev/null &&
  echo "python=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
command -v tc >/dev/null && echo tc=yes
command -v ip >/dev/null && echo ip=yes
[ -n "$S" ] && $S true 2>/dev/null && echo sudo=yes
command -v tegrastats >/dev/null && echo tegrastats=yes
command -v ethtool >/dev/null && echo ethtool=yes
p=tbprobe$$ v=no h=no
trap '$S ip link del $p 2>/dev/null; exit 1' HUP INT PIPE TERM
if $S ip link add $p type vxlan id 16777215 dstport 4789 2>/dev/null; then
  v=yes
  $S tc qdisc add dev $p root handle 1: htb default 1 2>/dev/null && h=yes
  $S ip link del $p
fi
trap - HUP INT PIPE TERM
echo vxlan=$v; echo htb=$h
ip -o -4 addr show | awk '{print "addr=" $4}'
"""


@dataclass(frozen=True)
class DeviceReport:
    """What a device offers, and what it lacks for joining a testbed."""

    node: str
    facts: dict
    missing: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.missing

    @property
    def sudo(self) -> str:
        return "" if self.facts.get("root") else "sudo -n "


def probe(session: Session) -> DeviceReport:
    res = session.run(PROBE, timeout=30)
    facts: dict = {}
    addrs = []
    for line in res.out.splitlines():
        key, _, value = line.partition("=")
        if key == "addr":
            addrs.append(value)
        elif key:
            facts[key] = {"yes": True, "no": False}.get(value, value)
    facts["addresses"] = addrs
    missing = []
    if not facts.get("root") and not facts.get("sudo"):
        missing.append("root or passwordless sudo (sudo -n) for ip and tc")
    py = facts.get("python")
    if not py:
        missing.append("python3")
    elif tuple(int(x) for x in py.split(".")) < MIN_PYTHON:
        missing.append(f"python3 >= {'.'.join(map(str, MIN_PYTHON))} (has {py})")
    for tool in ("ip", "tc"):
        if not facts.get(tool):
            missing.append(f"the `{tool}` command (iproute2)")
    if facts.get("ip") and (facts.get("root") or facts.get("sudo")):
        if not facts.get("vxlan"):
            missing.append("VXLAN support in the kernel (module vxlan)")
        elif not facts.get("htb"):
            missing.append("the HTB qdisc (module sch_htb) for shaping")
    clash = [a for a in addrs if _in_subnet(a)]
    if clash:
        missing.append(f"an address outside the testbed subnet {SUBNET} (has {clash[0]})")
    return DeviceReport(session.ep.node, facts, tuple(missing))


def _in_subnet(cidr: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_interface(cidr).ip in SUBNET
    except ValueError:
        return False


@dataclass(frozen=True)
class Attachment:
    """Everything needed to build, and later undo, one device's place in a testbed."""

    node: str
    vni: int
    host_ip: str  # this host's end of the tunnel on the management network
    device_ip: str
    iface: str  # the device's tunnel interface
    address: str  # the node's address in the testbed subnet
    mac: str
    egress_mbit: float | None
    deploy_dir: str  # absolute, on the device
    sudo: str

    def to_dict(self) -> dict:
        return asdict(self)


def plan(names: Names, node: Node, report: DeviceReport, egress_mbit: float | None,
         host_ip: str | None = None) -> Attachment:
    """`host_ip`: the address of the host whose switch the board joins, in a topology split
    over hosts (the board must reach it; `check` asked); None: this machine's address on the
    route to the board."""
    ep = Endpoint.of(node.name, node.ssh)
    try:
        device_ip = socket.gethostbyname(ep.host)
    except OSError as e:
        raise CapabilityError(f"{ep.where}: cannot resolve {ep.host}: {e}") from None
    if host_ip is None:
        with IPRoute() as ip:
            routes = ip.route("get", dst=device_ip)
        host_ip = routes[0].get_attr("RTA_PREFSRC") if routes else None
    if not host_ip:
        raise CapabilityError(f"{ep.where}: this host has no route to {device_ip}")
    vni = int(hashlib.sha1(f"{names.testbed}/{node.name}".encode()).hexdigest()[:6], 16) or 1
    home = report.facts.get("home") or "~"
    return Attachment(node.name, vni, host_ip, device_ip, names.device_port(node.index), node.ip,
                      node.mac, egress_mbit, f"{home}/{DEPLOY_BASE}/{names.testbed}",
                      report.sudo)


def attach_script(a: Attachment) -> str:
    """Shell commands that make the device's end: tunnel, address, shaping, deploy directory."""
    s, dev = a.sudo, quote([a.iface])
    lines = [
        "set -e",
        f"{s}ip link del {dev} 2>/dev/null || true",
        f"{s}ip link add {dev} type vxlan id {a.vni} local {a.device_ip} remote {a.host_ip} "
        f"dstport {VXLAN_PORT}",
        f"{s}ip link set {dev} address {a.mac} mtu {1500 - VXLAN_OVERHEAD}",
        f"{s}ip addr add {a.address}/{SUBNET.prefixlen} dev {dev}",
        f"{s}ip link set {dev} up",
        # checksums computed before encapsulation: a NIC offload cannot reach the inner packet
        # on every path (a veth "wire", the far end's userspace bridge)
        f"{s}ethtool -K {dev} tx off >/dev/null 2>&1 || true",
    ]
    if a.egress_mbit:
        p = htb_params(a.egress_mbit)
        lines += [
            f"{s}tc qdisc replace dev {dev} root handle 1: htb default 1",
            f"{s}tc class replace dev {dev} parent 1: classid 1:1 htb rate {p.rate_bps}bit "
            f"ceil {p.rate_bps}bit burst {p.burst_bytes} cburst {p.burst_bytes} "
            f"quantum {p.quantum_bytes}",
            f"{s}tc qdisc replace dev {dev} parent 1:1 handle 10: {tbf_leaf_tc(p)}",
        ]
    lines.append(f"mkdir -p {quote([a.deploy_dir + '/workloads'])}")
    return "\n".join(lines)


def detach_script(iface: str, deploy_dir: str, sudo: str) -> str:
    """Undo attach_script: the interface (its tc state goes with it) and the directory."""
    base = deploy_dir.rsplit("/", 1)[0]
    return (f"{sudo}ip link del {quote([iface])} 2>/dev/null; rm -rf {quote([deploy_dir])}; "
            f"rmdir {quote([base])} 2>/dev/null; true")


def deploy(session: Session, a: Attachment) -> int:
    """Copy the workload code into the testbed's directory on the device; returns file count."""
    sftp = session.sftp()
    try:
        n = 0
        for f in sorted(WORKLOADS.iterdir()):
            if f.suffix in (".py", ".yaml") and f.is_file():
                sftp.put(str(f), f"{a.deploy_dir}/workloads/{f.name}")
                n += 1
        return n
    finally:
        sftp.close()


def attach(session: Session, a: Attachment) -> None:
    session.run(attach_script(a), timeout=60, check=True)
    deploy(session, a)


def detach(session: Session, iface: str, deploy_dir: str, sudo: str) -> None:
    res = session.run(detach_script(iface, deploy_dir, sudo), timeout=60)
    if res.code != 0:
        raise NetworkError(f"{session.ep.where}: cleanup failed: {res.err.strip()[-300:]}")
    left = session.run(f"ip -o link show {quote([iface])} 2>/dev/null; "
                       f"ls -d {quote([deploy_dir])} 2>/dev/null; true")
    if left.out.strip():
        raise NetworkError(f"{session.ep.where}: still present after cleanup: {left.out.strip()}")


def tunnel_state(session: Session, iface: str) -> str:
    """'up', 'down' or 'missing': the device's end of the tunnel as the device sees it."""
    res = session.run(f"ip -o link show {quote([iface])} 2>/dev/null; true", timeout=10)
    if not res.out.strip():
        return "missing"
    return "up" if re.search(r"[<,]UP[,>]", res.out) else "down"


def flow_rates_script(iface: str, sudo: str,
                      flows: list[tuple[int, int, float, list[str]]]) -> str:
    """tc commands giving each flow (class minor, filter prio, rate Mbit/s, u32 keys
    "value/mask+offset")
    its own HTB class on the device's egress, as the testbed does in a node's namespace."""
    s, dev = sudo, quote([iface])
    lines = [f"{s}tc qdisc show dev {dev} | grep -q 'htb 1: root' || "
             f"{s}tc qdisc add dev {dev} root handle 1: htb default ffff"]
    for minor, prio, rate_mbit, keys in flows:
        p = htb_params(rate_mbit)  # the same parameters as links and host-node flows
        matches = " ".join(f"match u32 {k.split('/')[0]} {k.split('/')[1].split('+')[0]} "
                           f"at {k.split('+')[1]}" for k in keys)
        lines += [f"{s}tc class replace dev {dev} parent 1: classid 1:{minor:x} htb rate "
                  f"{p.rate_bps}bit ceil {p.rate_bps}bit burst {p.burst_bytes} "
                  f"cburst {p.burst_bytes} quantum {p.quantum_bytes}",
                  f"{s}tc qdisc replace dev {dev} parent 1:{minor:x} "
                  f"handle {leaf_handle(minor) >> 16:x}: {tbf_leaf_tc(p)}",
                  f"{s}tc filter add dev {dev} parent 1: protocol ip prio {prio} u32 "
                  f"{matches} flowid 1:{minor:x}"]
    return "set -e\n" + "\n".join(lines)


def read_classes_script(iface: str, sudo: str) -> str:
    """The HTB classes (text: iproute2's `tc -j class` prints no JSON for HTB) and the filters
    (JSON) on the device's egress, read back after every change."""
    dev = quote([iface])
    return (f"{sudo}tc class show dev {dev}; echo ---; "
            f"{sudo}tc -j filter show dev {dev} parent 1: || echo '[]'")


_CLASS = re.compile(r"class htb 1:([0-9a-f]+) .*?\brate (\S+)")


def parse_classes(output: str) -> tuple[dict[int, int], set[int]]:
    """(class minor -> rate in bit/s, class minors some filter points to) from
    read_classes_script's output."""
    import json

    from testbed.units import parse_rate_mbit

    text, _, filters_json = output.partition("---")
    rates = {int(m.group(1), 16): int(round(parse_rate_mbit(m.group(2)) * 1e6))
             for m in _CLASS.finditer(text)}
    filters = json.loads(filters_json.strip() or "[]")
    targets = {int(str(f["options"]["flowid"]).split(":")[1], 16) for f in filters
               if isinstance(f.get("options"), dict) and "flowid" in f["options"]}
    return rates, targets


def remove_flow_rates_script(iface: str, sudo: str, flows: list[tuple[int, int]]) -> str:
    """Undo flow_rates_script for (class minor, filter prio) pairs."""
    s, dev = sudo, quote([iface])
    return "\n".join(f"{s}tc filter del dev {dev} parent 1: prio {prio} 2>/dev/null; "
                     f"{s}tc class del dev {dev} classid 1:{m:x} 2>/dev/null"
                     for m, prio in flows) + "\ntrue"
