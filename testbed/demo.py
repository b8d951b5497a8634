"""`make demo`: bring up a topology, measure shaped paths with iperf3 and ping, print configured
vs measured, tear down. Usage: python -m testbed.demo [TOPOLOGY]"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.table import Table

from testbed import api, measure
from testbed.routing import Fabric, default_path
from testbed.topology import load


def main(path: str = "topologies/demo.yaml") -> int:
    console = Console(width=None if sys.stdout.isatty() else 110)
    topo = load(path)
    t0 = time.monotonic()
    with console.status("bringing the network up") as st:
        api.up(path, progress=lambda s: st.update(f"up: {s}"))
    console.print(f"[green]{topo.name} up[/] in {time.monotonic() - t0:.1f} s: "
                  f"{len(topo.nodes)} nodes, {len(topo.links)} links, all pairs reachable")
    try:
        fabric = Fabric.of(topo)
        pairs = [("cam", "srv"), ("gw", "e1"), ("e2", "srv"), ("cam", "e2")]
        pairs = [p for p in pairs if all(n in fabric.nodes for n in p)] or [
            (topo.nodes[0].name, topo.nodes[-1].name)]
        table = Table("flow", "path", "bottleneck Mbit/s", "ideal goodput", "measured",
                      "error %", "ping ms", title="configured vs measured (iperf3, 8 s)")
        for src, dst in pairs:
            p = default_path(fabric, src, dst)
            bw = min((topo.link_between(a, b).shape.bw_mbit or float("inf"))
                     for a, b in zip(p, p[1:], strict=False))
            with console.status(f"iperf3 {src} -> {dst}"):
                got = measure.iperf3(topo.name, src, dst, seconds=6, omit=2)
                rtt = measure.ping_ms(topo.name, src, dst, count=5)
            ideal = measure.ideal_goodput_mbit(bw)
            table.add_row(f"{src} -> {dst}", ",".join(p), f"{bw:g}", f"{ideal:.3f}",
                          f"{got:.3f}", f"{(got - ideal) / ideal * 100:+.2f}", f"{rtt:.2f}")
        console.print(table)
        console.print("ideal goodput = rate x 1448/1514 (TCP payload per Ethernet frame)")
    finally:
        api.down(topo.name)
        console.print(f"{topo.name} torn down")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
