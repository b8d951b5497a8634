"""Time to install and confirm per-flow paths (3-4 hops) through the controller's flow API.

Batches of 1, 100 and 1,000 flows in one call each (every switch on every path confirmed by an
OpenFlow barrier before the call returns), and single-flow calls for per-flow p50/p99.
Topology: a random mesh of 30 nodes, degree 3.

Usage: python bench/flows.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import table, write_section  # noqa: E402
from testbed import api  # noqa: E402
from testbed.routing import FlowSpec, default_path  # noqa: E402
from testbed.sdn import FlowClient  # noqa: E402


def long_paths(client: FlowClient) -> list[tuple[str, ...]]:
    nodes = list(client.fabric.nodes)
    out = []
    for a in nodes:
        for b in nodes:
            if a != b:
                p = default_path(client.fabric, a, b)
                if 3 <= len(p) - 1 <= 4:
                    out.append(tuple(p))
    return out


def specs(paths, n: int, port0: int) -> list[FlowSpec]:
    return [FlowSpec(src=p[0], dst=p[-1], path=p, dport=port0 + i)
            for i, p in enumerate(paths[i % len(paths)] for i in range(n))]


def main() -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write("name: bench-flows\ngenerate: {random_mesh: {nodes: 30, degree: 3, seed: 2}}\n")
    ledger = api.up(f.name)
    try:
        client = FlowClient(ledger)
        paths = long_paths(client)
        rows = []
        for n in (1, 100, 1000):
            t0 = time.perf_counter()
            client.add(specs(paths, n, 10000))
            took = time.perf_counter() - t0
            t0 = time.perf_counter()
            client.remove_all()
            rm = time.perf_counter() - t0
            rows.append([n, f"{took:.3f}", f"{took / n * 1000:.2f}", f"{rm:.3f}"])
            print(rows[-1], flush=True)
        single = []
        for spec in specs(paths, 200, 20000):
            t0 = time.perf_counter()
            client.add([spec])
            single.append((time.perf_counter() - t0) * 1000)
        client.remove_all()
        q = statistics.quantiles(single, n=100)
        body = table(["flows in one call", "install + confirm s", "per flow ms", "remove all s"],
                     rows)
        body += (f"\n\nOne flow per call (200 calls): p50 {q[49]:.1f} ms, p99 {q[98]:.1f} ms. "
                 f"Each flow is {len(paths[0]) - 1}-4 hops, installed in both directions "
                 "(6-10 OpenFlow rules), matched on protocol, addresses, port and in_port. "
                 "Target: 1,000 flows in 2 s or less.")
        write_section("flows", "Per-flow path installation", body)
    finally:
        api.down("bench-flows")


if __name__ == "__main__":
    main()
