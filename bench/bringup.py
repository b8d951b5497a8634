"""Bring-up + teardown time of random meshes (10, 50, 100 nodes), ours vs Mininet, one run.

Ours: `testbed up` + `testbed down` through the CLI (includes starting the controller,
installing all routes with barriers, the reachability proof: every link both ways and a
seeded sample of routes, and measuring the fabric's idle latency).
Mininet (2.3, Debian): the same nodes and links built with its Python API (one host and one
userspace OVS switch per node, the mesh as TCLinks of 10 Mbit/s), start + stop, no controller
and no reachability check; plus Mininet's linear,N topology as the issue's reference.

Usage: python bench/bringup.py [--sizes 10,50,100] [--repeat 1]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import table, write_section  # noqa: E402
from testbed.topology.generate import random_mesh  # noqa: E402
from testbed.topology.schema import RandomMesh  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MININET_SCRIPT = r"""
import sys, time
from functools import partial
from mininet.net import Mininet
from mininet.link import TCLink
from mininet.node import OVSSwitch
from mininet.topo import LinearTopo, Topo
from mininet.log import setLogLevel
setLogLevel("error")
n = int(sys.argv[1])
edges = [tuple(e.split("-")) for e in sys.argv[2].split(",")] if sys.argv[2] != "linear" else []
class Mesh(Topo):
    def build(self):
        for i in range(1, n + 1):
            self.addSwitch(f"s{i}")
            self.addHost(f"h{i}")
            self.addLink(f"h{i}", f"s{i}")
        for a, b in edges:
            self.addLink(f"s{a}", f"s{b}", bw=10)
t0 = time.monotonic()
topo = LinearTopo(k=n) if sys.argv[2] == "linear" else Mesh()
link = partial(TCLink, bw=10) if sys.argv[2] == "linear" else TCLink
net = Mininet(topo=topo, switch=partial(OVSSwitch, datapath="user"), link=link,
              controller=None)
net.start()
t1 = time.monotonic()
net.stop()
print(f"{t1 - t0:.3f} {time.monotonic() - t1:.3f}")
"""


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def ours(n: int) -> tuple[float, float, float]:
    """(up s, down s, MB of memory per node while up)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(f"name: bench-{n}\ngenerate: {{random_mesh: {{nodes: {n}, degree: 3, "
                f"bw_mean: 10, seed: 1}}}}\n")
    tb = [sys.executable, "-m", "testbed"]
    before = mem_available_mb()
    t0 = time.monotonic()
    subprocess.run([*tb, "up", f.name], check=True, cwd=ROOT, capture_output=True)
    t1 = time.monotonic()
    per_node = (before - mem_available_mb()) / n
    subprocess.run([*tb, "down", "--name", f"bench-{n}"], check=True, cwd=ROOT,
                   capture_output=True)
    return t1 - t0, time.monotonic() - t1, per_node


def mininet_mesh(n: int) -> tuple[float, float]:
    _, edges = random_mesh(RandomMesh(nodes=n, degree=3, bw_mean=10, seed=1))
    arg = ",".join(f"{a[1:]}-{b[1:]}" for a, b, _ in edges)
    out = subprocess.run(["/usr/bin/python3", "-c", MININET_SCRIPT, str(n), arg], check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1])


def mininet_linear(n: int) -> float:
    """What `mn --topo linear,N --switch ovs,datapath=user --link tc,bw=10 --controller none
    --test none` does, through Mininet's API: the `mn` command itself answers any failure
    with `killall`/`pkill -f` by pattern and `rm -f /tmp/*.log`, which must not run here."""
    out = subprocess.run(["/usr/bin/python3", "-c", MININET_SCRIPT, str(n), "linear"],
                         check=True, capture_output=True, text=True).stdout.split()
    return float(out[0]) + float(out[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,50,100,300,1000")
    ap.add_argument("--mininet-up-to", type=int, default=300,
                    help="largest size Mininet is run at (it takes minutes per 100 nodes)")
    args = ap.parse_args()
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        up, down, mb = ours(n)
        links = round(n * 3 / 2)
        row = [n, links, f"{up:.2f}", f"{down:.2f}", f"{up + down:.2f}", f"{mb:.1f}"]
        if n <= args.mininet_up_to:
            m_up, m_down = mininet_mesh(n)
            lin = mininet_linear(n)
            row += [f"{m_up:.2f}", f"{m_down:.2f}", f"{m_up + m_down:.2f}",
                    f"{(up + down) / (m_up + m_down):.2f}x", f"{lin:.2f}"]
        else:
            row += ["not run"] * 5
        rows.append(row)
        print(rows[-1], flush=True)
    body = table(["nodes", "mesh links", "ours up s", "ours down s", "ours total s",
                  "ours MB per node", "Mininet up s", "Mininet down s", "Mininet total s",
                  "ours / Mininet", "`mn --topo linear,N` s"], rows)
    body += ("\n\nOurs includes what Mininet's run does not: the os-ken controller start, "
             "all shortest-path routes installed and confirmed by OpenFlow barriers, the "
             "reachability proof (every link both ways + 3 seeded routes per node, about "
             "2 x links + 3 x nodes ICMP probes) and the fabric's idle latency measured. "
             "Mininet: same hosts, switches and links "
             "via its Python API (OVSSwitch datapath=user, TCLink bw=10, no controller). "
             "Last column: Mininet's `linear,N` topology (N switches, N hosts, all links "
             "TCLink bw=10), what `mn --topo linear,N --switch ovs,datapath=user --link "
             "tc,bw=10 --test none` builds; run through Mininet's API because the `mn` "
             "command answers any failure with `killall` by pattern and `rm -f /tmp/*.log`. "
             "MB per node: the host's MemAvailable before `up` minus after, over the nodes "
             "(namespaces, veths, qdiscs, switch daemons, controller). Mininet is not run "
             "above --mininet-up-to nodes.")
    write_section("bringup", "Bring-up and teardown time vs Mininet", body)


if __name__ == "__main__":
    main()
