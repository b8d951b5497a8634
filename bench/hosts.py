"""A topology split over two hosts, on one machine: what a cut link costs and what bring-up
costs, side by side with the same topology on one host, in one run.

The two "hosts" are network namespaces joined by a veth pair (the network between hosts),
as in tests/test_hosts.py. Measured:
- a cut link (VXLAN tunnel between the hosts) against a link inside a host (veth pair), on a
  4-node line n1-n2 | n3-n4 with the middle link cut: idle RTT (`ping -c 200 -i 0.01`) and
  unshaped TCP goodput (iperf3, 5 s) over one hop, with the hosts' network at a 1,500-byte
  MTU (the tunnel's outer packets are fragmented) and at 1,550 (they are not);
- shaping on a cut link: a 20 Mbit/s link's goodput against the ideal 20 x 1448/1514;
- bring-up (`testbed up`, wall clock) of a 20-node random mesh on one host, split over two
  hosts built by this process, and split over two hosts built by a local Ray cluster's two
  labelled nodes (`--cluster`);
- a run (`testbed run`) on that split mesh, one 8-s job whose source and task sit on the two
  ends of a cut link: its task processes started by this process, then by each host's Ray
  actor (what a host on another machine needs): measured beside predicted throughput,
  latency and the run's wall time (node profiling included).

Usage: python bench/hosts.py [--repeats 3] [--no-ray]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import table, write_section  # noqa: E402
from testbed import api, measure  # noqa: E402
from testbed.experiment.options import RunOptions  # noqa: E402
from testbed.topology import load  # noqa: E402
from tests.fakehosts import FakeHosts  # noqa: E402

LINE = ("nodes: {n1: {host: a}, n2: {host: a}, n3: {host: b}, n4: {host: b}}\n"
        "links:\n  - {between: [n1, n2]}\n  - {between: [n2, n3]}\n  - {between: [n3, n4]}\n"
        "  - {between: [n1, n3], bw: 20}\n")
MESH = "generate:\n  random_mesh: {nodes: 20, degree: 3, bw_mean: 20, seed: 3}\n"
JOB = ("jobs:\n  - name: j\n    source: {src}\n    input: 20kB\n    duration: 8s\n"
       "    tasks:\n      work: {{work: 0.002, memory: 64MB, node: {dst}}}\n")


def fake_hosts(mtu: int) -> FakeHosts:
    return FakeHosts("tbb", "10.250.9", mtu)


def ping_ms(name: str, a: str, b: str) -> float:
    ip = api.status(name)["nodes"][b]["ip"]
    res = api.run_in_node(name, a, ["ping", "-c", "200", "-i", "0.01", "-q", ip], timeout=60)
    return float(re.search(r"= [\d.]+/([\d.]+)/", res.stdout).group(1))


def up_seconds(path: Path, cluster: str | None) -> float:
    t0 = time.monotonic()
    ledger = api.up(path, cluster=cluster)
    took = time.monotonic() - t0
    api.down(ledger.name)
    return took


def cut_link_rows(tmp: Path) -> list[list]:
    rows = []
    for mtu in (1500, 1550):
        hosts = fake_hosts(mtu).start()
        path = tmp / "line.yaml"
        path.write_text("name: tbb-line\n" + hosts.yaml() + LINE)
        ledger = api.up(path)
        try:
            inside = (ping_ms(ledger.name, "n1", "n2"),
                      measure.iperf3(ledger.name, "n1", "n2", seconds=5, omit=1))
            cut = (ping_ms(ledger.name, "n2", "n3"),
                   measure.iperf3(ledger.name, "n2", "n3", seconds=5, omit=1))
            shaped = measure.iperf3(ledger.name, "n1", "n3", seconds=5, omit=1)
        finally:
            api.down(ledger.name)
            hosts.close()
        ideal = measure.ideal_goodput_mbit(20)
        rows.append([mtu, f"{inside[0]:.3f}", f"{cut[0]:.3f}", f"{cut[0] - inside[0]:+.3f}",
                     f"{inside[1]:.0f}", f"{cut[1]:.0f}",
                     f"{shaped:.2f} / {ideal:.2f} ({shaped / ideal:.3f})"])
    return rows


def run_row(label: str, path: Path, cluster: str | None, tmp: Path) -> list:
    ledger = api.up(path, cluster=cluster)
    try:
        lk = load(path).cut_links[0]
        jobs = tmp / "jobs.yaml"
        jobs.write_text(JOB.format(src=lk.a, dst=lk.b))
        t0 = time.monotonic()
        job = api.experiment(ledger.name, jobs, RunOptions("otfs", tmp / "run")).iloc[0]
        took = time.monotonic() - t0
    finally:
        api.down(ledger.name)
    return [label, f"{took:.1f}", f"{job.throughput_measured_items_s:.1f}",
            f"{job.throughput_predicted_items_s:.1f}", f"{job.fidelity:.3f}",
            f"{job.latency_ms_p50:.2f}"]


def bring_up_rows(tmp: Path, repeats: int, ray: bool) -> tuple[list[list], list[list]]:
    hosts = fake_hosts(1500).start()
    one, split = tmp / "one.yaml", tmp / "split.yaml"
    one.write_text("name: tbb-one\n" + MESH)
    split.write_text("name: tbb-split\n" + hosts.yaml() + "partition: auto\n" + MESH)
    topo = load(split)
    cases = [("one host", one, None), ("two hosts, built here", split, None)]
    cluster = None
    if ray:
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        for h in hosts.hosts:
            cluster.add_node(num_cpus=1, labels={"testbed-host": h})
        cluster.wait_for_nodes()
        cases.append(("two hosts, built by their Ray nodes", split, cluster.address))
    rows, runs = [], []
    try:
        for label, path, address in cases:
            took = [up_seconds(path, address) for _ in range(repeats)]
            rows.append([label, len(topo.cut_links) if path == split else 0,
                         f"{statistics.median(took):.2f}", f"{min(took):.2f}-{max(took):.2f}"])
        for label, path, address in cases[1:]:
            runs.append(run_row(label, path, address, tmp))
    finally:
        hosts.close()
        if cluster is not None:
            import ray as ray_mod

            ray_mod.shutdown()
            cluster.shutdown()
    return rows, runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tunnel = cut_link_rows(Path(d))
        bring, runs = bring_up_rows(Path(d), args.repeats, not args.no_ray)
    body = ("A cut link (VXLAN between the two hosts' namespaces) against a link inside a host "
            "(veth), one hop, unshaped; shaped: a 20 Mbit/s cut link's goodput against the "
            "ideal.\n\n"
            + table(["hosts' MTU", "RTT inside, ms", "RTT cut, ms", "tunnel adds, ms",
                     "TCP inside, Mbit/s", "TCP cut, Mbit/s", "20 Mbit/s cut: got / ideal"],
                    tunnel)
            + f"\n\nBring-up of a 20-node random mesh (degree 3), median of {args.repeats}:\n\n"
            + table(["layout", "links cut", "up, s", "range, s"], bring)
            + "\n\nA run on the split mesh: one 8-s job (20 kB items) from a node on one host "
            "to a task on the other, across a cut link; the run's wall time includes "
            "measuring the 20 nodes' speeds:\n\n"
            + table(["task processes started", "run, s", "items/s measured",
                     "items/s predicted", "measured/predicted", "latency p50, ms"], runs))
    write_section("hosts", "A topology split over two hosts (one machine)", body)
    print(body)


if __name__ == "__main__":
    main()
