"""Shaping fidelity: TCP goodput vs ideal at 0.5-100 Mbit/s, ours vs Mininet's TCLink, one run.

Both measured the same way: iperf3, receiver-side per-second records, 10 s after skipping 2 s
(testbed.measure.goodput_mbit). Ideal goodput = rate x 1448/1514.
Ours: two nodes, one shaped link (a -> switch -> shaped veth -> switch -> b), with both
switches in the host's Open vSwitch, and again with each in a switch daemon of its own.
Mininet 2.3: h1 - s1 - h2, TCLink bw=rate on h1-s1, OVSSwitch datapath=user (standalone),
transmit checksum offload turned off on every interface (TCP stalls otherwise, PLATFORM.md).

Usage: python bench/shaping.py [--rates 0.5,1,5,10,30,100]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import table, write_section  # noqa: E402
from testbed import api, measure  # noqa: E402

SECONDS, OMIT = 10, 2
MININET_SCRIPT = r"""
import sys, time
from functools import partial
from mininet.net import Mininet
from mininet.link import TCLink
from mininet.node import OVSSwitch
from mininet.topo import Topo
from mininet.log import setLogLevel
setLogLevel("error")
rate, duration = float(sys.argv[1]), sys.argv[2]
class Pair(Topo):
    def build(self):
        s = self.addSwitch("s1")
        self.addLink(self.addHost("h1"), s, bw=rate)
        self.addLink(self.addHost("h2"), s)
net = Mininet(topo=Pair(), switch=partial(OVSSwitch, datapath="user", failMode="standalone"),
              link=TCLink, controller=None)
net.start()
try:
    for node in (net["h1"], net["h2"], net["s1"]):
        for intf in node.intfList():
            if intf.name != "lo":
                node.cmd(f"ethtool -K {intf.name} tx off")
    h1, h2 = net["h1"], net["h2"]
    h1.cmd(f"ping -c 2 {h2.IP()}")
    srv = h2.popen(["iperf3", "-s", "-1", "-J"])
    time.sleep(0.5)
    h1.cmd(f"iperf3 -c {h2.IP()} -t {duration}")
    sys.stdout.write(srv.communicate()[0].decode())
finally:
    net.stop()
"""


def ours(rate: float, per_daemon: int = 0) -> float:
    """per_daemon 1: each switch in an ovs-vswitchd of its own (the link joins two daemons'
    namespaces, as cut links of large fabrics do); 0: both in the host's Open vSwitch."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(f"name: bench-shape\nfabric: {{switches_per_daemon: {per_daemon}}}\n"
                f"nodes: {{a: {{}}, b: {{}}}}\nlinks: [{{between: [a, b], bw: {rate}}}]\n")
    api.up(f.name)
    try:
        return measure.iperf3("bench-shape", "a", "b", seconds=SECONDS, omit=OMIT)
    finally:
        api.down("bench-shape")


def mininet(rate: float) -> float:
    out = subprocess.run(["/usr/bin/python3", "-c", MININET_SCRIPT, str(rate),
                          str(SECONDS + OMIT + 1)], check=True, capture_output=True, text=True)
    return measure.goodput_mbit(json.loads(out.stdout), OMIT, SECONDS)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="0.5,1,5,10,30,100")
    rows = []
    for rate in [float(x) for x in ap.parse_args().rates.split(",")]:
        ideal = measure.ideal_goodput_mbit(rate)
        got, split, mn = ours(rate), ours(rate, per_daemon=1), mininet(rate)
        rows.append([f"{rate:g}", f"{ideal:.3f}", f"{got:.3f}",
                     f"{(got - ideal) / ideal * 100:+.2f}", f"{split:.3f}",
                     f"{(split - ideal) / ideal * 100:+.2f}", f"{mn:.3f}",
                     f"{(mn - ideal) / ideal * 100:+.2f}"])
        print(rows[-1], flush=True)
    body = table(["rate Mbit/s", "ideal goodput", "ours", "ours error %",
                  "ours, two switch daemons", "error %", "Mininet TCLink", "Mininet error %"],
                 rows)
    body += ("\n\nIdeal goodput = rate x 1448/1514: the configured rate counts whole Ethernet "
             "frames; TCP carries 1448 payload bytes per 1514-byte frame (1500 MTU, "
             "timestamps). Goal: within 1% at every rate. 'Two switch daemons': the same "
             "link with each switch in an ovs-vswitchd of its own, in its own namespace "
             "(`fabric: {switches_per_daemon: 1}`), as the links between daemons of a large "
             "fabric are.")
    write_section("shaping", "Shaping fidelity vs Mininet's TCLink", body)


if __name__ == "__main__":
    main()
