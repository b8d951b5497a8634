"""`make demo`: (1) bring up a topology of namespace hosts and a Docker container, measure
shaped paths with iperf3 and ping, print configured vs measured, tear down; (2) a short
emulated campaign (OTFA vs LR on a small mesh, real processes and bytes) ending with a table
of measured vs predicted and a plot.
Usage: python -m testbed.demo [TOPOLOGY] [CAMPAIGN]"""

from __future__ import annotations

import sys
import time
from collections import Counter

from rich.console import Console
from rich.table import Table

from testbed import api, measure
from testbed.routing import Fabric, default_path
from testbed.topology import load


def main(path: str = "topologies/demo.yaml", campaign: str = "campaigns/demo.yaml") -> int:
    for image in sorted({n.image for n in load(path).nodes if n.image}):
        with Console().status(f"{image} image (the first build takes a minute or two)") as st:
            api.build_image(image, progress=lambda s: st.update(f"image: {s}"))
    shaping(path)
    return campaign_demo(campaign)


def campaign_demo(path: str) -> int:
    from pathlib import Path

    import pandas as pd

    from testbed.campaign.figures import plot
    from testbed.campaign.run import run_campaign
    from testbed.campaign.sweep import load_campaign

    console = Console(width=None if sys.stdout.isatty() else 110)
    root = Path("results") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    spec = load_campaign(path).spec
    def progress(done, total, trial, row) -> None:
        if trial is None:
            return
        varied = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in trial.params.items())
        st.update(f"campaign {spec.name}: trial {done + (row is None)}/{total} ({varied})")

    with console.status("campaign") as st:
        run_campaign(path, root=root, progress=progress)
    df = pd.read_csv(root / spec.name / "trials.csv")
    swept = [c for c in df.columns if c.startswith("param:") and c != "param:scheduler"]
    table = Table("scheduler", *(c.rsplit(".", 1)[-1] for c in swept), "status",
                  "measured items/s", "predicted items/s", "measured / predicted",
                  "latency p50 ms", "fastest item ms", "unloaded predicted ms",
                  title=f"campaign {spec.name}: {len(df)} trials")
    for _, r in df.iterrows():
        table.add_row(r["scheduler"], *(str(r[c]) for c in swept),
                      r["status"] if r["status"] != "partial" else f"partial: {r['reason']}",
                      f"{r['throughput_measured_items_s']:.2f}",
                      f"{r['throughput_predicted_items_s']:.2f}", f"{r['fidelity']:.2f}",
                      f"{r['latency_ms_p50']:.0f}", f"{r['latency_ms_min']:.0f}",
                      f"{r['latency_ms_unloaded_predicted']:.0f}")
    console.print(table)
    for png in plot(root / spec.name):
        console.print(f"plot: {png}")
    # a partial trial (a job that did not finish in time) is a result, shown and left out of
    # the figures; only a trial that failed to run fails the demo
    return 0 if (df.status != "failed").all() else 1


def shaping(path: str) -> None:
    console = Console(width=None if sys.stdout.isatty() else 110)
    topo = load(path)
    t0 = time.monotonic()
    with console.status("bringing the network up") as st:
        api.up(path, progress=lambda s: st.update(f"up: {s}"))
    kinds = ", ".join(f"{count} {kind}" for kind, count in
                      Counter(n.kind for n in topo.nodes).items())
    console.print(f"[green]{topo.name} up[/] in {time.monotonic() - t0:.1f} s: "
                  f"{len(topo.nodes)} nodes ({kinds}), {len(topo.links)} links, "
                  "all pairs reachable")
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


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
