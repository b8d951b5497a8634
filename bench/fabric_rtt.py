"""Idle round trip per hop vs node count, ours vs Mininet, one run.

Both build the same random mesh (degree 3, links of 10 Mbit/s): one host and one userspace
OVS switch per node. Ours: `testbed up` (os-ken controller, shortest-path routes). Mininet
(2.3, Debian): the same hosts, switches and TCLinks through its Python API, OVSSwitch
datapath=user, no controller; the same shortest paths (testbed.routing) installed as static
OpenFlow rules per switch with ovs-ofctl, so both forward over identical paths. Measured
with `ping -c 20 -i 0.05` between neighbours (1 hop) and over the longest shortest path
found by a double sweep; per hop = longest RTT / its hops. Also the idle CPU of
ovs-vswitchd (what forwarding costs the nodes) and the memory per node.

Usage: python bench/fabric_rtt.py [--sizes 10,50,100,300]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import table, write_section  # noqa: E402
from testbed import api  # noqa: E402
from testbed.topology import loads  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

MININET_SCRIPT = r"""
import json, re, subprocess, sys, time
from functools import partial
from mininet.net import Mininet
from mininet.link import TCLink
from mininet.node import OVSSwitch
from mininet.topo import Topo
from mininet.log import setLogLevel
setLogLevel("error")
spec = json.load(sys.stdin)
names, links, routes, probes = spec["names"], spec["links"], spec["routes"], spec["probes"]
class Mesh(Topo):
    def build(self):
        for i, n in enumerate(names, 1):
            self.addSwitch(f"s{i}", dpid=f"{i:016x}")
            self.addHost(n, ip=spec["ips"][n] + "/16", mac=spec["macs"][n])
            self.addLink(n, f"s{i}", port2=1)
        for k, (a, b) in enumerate(links):
            self.addLink(f"s{names.index(a) + 1}", f"s{names.index(b) + 1}",
                         port1=k + 2, port2=k + 2, bw=10)
net = Mininet(topo=Mesh(), switch=partial(OVSSwitch, datapath="user", failMode="secure",
              protocols="OpenFlow13"), link=TCLink, controller=None, autoSetMacs=False)
net.start()
for i, n in enumerate(names, 1):  # the same shortest paths as the testbed's controller
    rules = []
    for dst, port in routes[n].items():
        ip = spec["ips"][dst]
        rules += [f"priority=100,ip,nw_dst={ip},actions=output:{port}",
                  f"priority=100,arp,arp_tpa={ip},actions=output:{port}"]
    with open(f"/tmp/mn-rules-{i}", "w") as f:
        f.write("\n".join(rules) + "\n")
    subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "add-flows", f"s{i}", f"/tmp/mn-rules-{i}"],
                   check=True)
time.sleep(1)
out = {}
for a, b in probes:
    res = net.get(a).cmd(f"ping -c 20 -i 0.05 -q {spec['ips'][b]}")
    m = re.search(r"= [\d.]+/([\d.]+)/", res)
    out[f"{a}-{b}"] = float(m.group(1)) if m else None
net.stop()
print(json.dumps(out))
"""


def mesh(n: int, per_daemon: int | None = None) -> str:
    fabric = "" if per_daemon is None else f"fabric: {{switches_per_daemon: {per_daemon}}}\n"
    return (f"name: rtt-{n}\n{fabric}generate: {{random_mesh: {{nodes: {n}, degree: 3, "
            "bw_mean: 10, bw_var: 0, seed: 1}}\n")


def ping_ms(name: str, a: str, b_ip: str) -> float | None:
    res = api.run_in_node(name, a, ["ping", "-c", "20", "-i", "0.05", "-q", b_ip], timeout=60)
    m = re.search(r"= [\d.]+/([\d.]+)/", res.stdout)
    return float(m.group(1)) if m else None


def vswitchd_pids(state_dir: Path) -> list[int]:
    """The host's ovs-vswitchd and every switch daemon of the testbed."""
    files = [Path("/var/run/openvswitch/ovs-vswitchd.pid"),
             *state_dir.glob("ovs*/ovs-vswitchd.pid")]
    return [int(f.read_text()) for f in files]


def vswitchd_cpu_and_rss(state_dir: Path, seconds: float = 5.0) -> tuple[float, float]:
    """Idle CPU % (100 = one core) and resident MB of all the testbed's ovs-vswitchd."""
    pids = vswitchd_pids(state_dir)

    def ticks() -> int:
        total = 0
        for pid in pids:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        return total

    t0 = ticks()
    time.sleep(seconds)
    rss = sum(int(Path(f"/proc/{p}/statm").read_text().split()[1]) for p in pids) * 4096 / 1e6
    return (ticks() - t0) / 100 / seconds * 100, rss


def ours(n: int, per_daemon: int | None = None) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(mesh(n, per_daemon))
    t0 = time.monotonic()
    ledger = api.up(f.name)
    up_s = time.monotonic() - t0
    try:
        fab = ledger.extra["fabric"]
        ips = {k: v["ip"] for k, v in ledger.topology["nodes"].items()}
        a, far = fab["longest_path"]
        lk = ledger.topology["links"][0]["between"]
        cpu, rss = vswitchd_cpu_and_rss(ledger.names.state_dir)
        one = ping_ms(ledger.name, lk[0], ips[lk[1]])
        longest = ping_ms(ledger.name, a, ips[far])
        return {"up_s": up_s, "one": one, "longest": longest, "hops": fab["longest_path_hops"],
                "probes": [list(lk), [a, far]], "cpu": cpu, "rss_mb": rss,
                "daemons": ledger.extra.get("switch_daemons", 1), "datapath": fab["datapath"]}
    finally:
        api.down(ledger.name)


def mininet(n: int, probes: list[list[str]]) -> dict:
    from testbed.routing import Fabric, next_hops

    topo = loads(mesh(n))
    fabric = Fabric.of(topo)
    hops = next_hops(fabric)  # node -> destination -> next hop
    names = [x.name for x in topo.nodes]
    port = {}
    for k, lk in enumerate(topo.links):
        port[(lk.a, lk.b)] = port[(lk.b, lk.a)] = k + 2
    routes = {u: {d: (1 if u == d else port[(u, hops[u][d])]) for d in names} for u in names}
    spec = {"names": names, "links": [[lk.a, lk.b] for lk in topo.links], "routes": routes,
            "ips": {x.name: x.ip for x in topo.nodes}, "macs": {x.name: x.mac for x in topo.nodes},
            "probes": probes}
    res = subprocess.run(["/usr/bin/python3", "-c", MININET_SCRIPT], input=json.dumps(spec),
                         capture_output=True, text=True, timeout=1800)  # too long for argv
    if res.returncode != 0:
        return {"error": res.stderr.strip()[-300:]}
    got = json.loads(res.stdout.strip().splitlines()[-1])
    return {"one": got["-".join(probes[0])], "longest": got["-".join(probes[1])]}


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,50,100,300")
    ap.add_argument("--mininet-up-to", type=int, default=300)
    ap.add_argument("--one-daemon-up-to", type=int, default=100,
                    help="also run ours with every switch in one daemon up to this size")
    args = ap.parse_args()
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        o = ours(n)
        single = ours(n, per_daemon=0) if n <= args.one_daemon_up_to else {}
        m = mininet(n, o["probes"]) if n <= args.mininet_up_to else {}
        per = o["longest"] / o["hops"] if o["longest"] else None
        s_per = single["longest"] / single["hops"] if single.get("longest") else None
        m_per = m.get("longest") / o["hops"] if m.get("longest") else None
        rows.append([n, o["datapath"], o["daemons"], f"{o['up_s']:.1f}", fmt(o["one"]),
                     fmt(o["longest"]), o["hops"], fmt(per), fmt(s_per), fmt(m.get("one")),
                     fmt(m.get("longest")), fmt(m_per), f"{o['cpu']:.0f}",
                     f"{o['rss_mb']:.0f}"])
        print(rows[-1], m.get("error", ""), flush=True)
    body = table(["nodes", "datapath", "switch daemons", "ours up s", "ours 1 hop ms",
                  "ours longest ms", "hops", "ours per hop ms", "ours, one daemon, per hop ms",
                  "Mininet 1 hop ms", "Mininet longest ms", "Mininet per hop ms",
                  "ovs-vswitchd idle CPU %", "ovs-vswitchd MB"], rows)
    body += ("\n\nRTT: `ping -c 20 -i 0.05`, mean, idle network (no other traffic), the same "
             "pair of nodes for both tools. Ours spreads the switches over ovs-vswitchd "
             "processes of at most 4 switches each (testbed/net/shards.py); 'one daemon' is "
             "the same mesh with `fabric: {switches_per_daemon: 0}` (every switch in the "
             "host's Open vSwitch, the layout before). Mininet runs the same hosts, switches "
             "and TCLinks (bw 10) in one userspace ovs-vswitchd with the same shortest-path "
             "rules installed statically (no controller). ovs-vswitchd idle CPU and memory: "
             "all daemons of our testbed (the host's included), nothing running, 5 s average "
             "(100% = one core).")
    write_section("fabric_rtt", "Idle RTT per hop vs node count, ours vs Mininet", body)


if __name__ == "__main__":
    main()
