"""Bring-up of Docker container nodes (10 and 30), started concurrently, against the same mesh of
host nodes and against starting the same containers one by one with `docker run`.

Each size is one random mesh (degree 3, 10 Mbit/s links) built twice by `testbed up` in this
process: all nodes `kind: docker` (edge-node image, 0.1 core, 128 MB each), then all nodes
`kind: host`. The per-container cost is the difference divided by the node count. The
sequential baseline runs `docker run -d --network none` for the same containers in a loop.

Usage: python bench/containers.py [--sizes 10,30]
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
from testbed import api, images  # noqa: E402


def bring_up(n: int, kind: str) -> tuple[float, float, float]:
    """(up s, of which the container phase s, down s) for an n-node mesh of `kind` nodes."""
    name = f"cbench-{kind}-{n}"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(f"name: {name}\ndefaults: {{node: {{kind: {kind}, cpu: 0.1, memory: 128}}}}\n"
                f"generate: {{random_mesh: {{nodes: {n}, degree: 3, bw_mean: 10, seed: 1}}}}\n")
    marks: list[tuple[float, str]] = []
    t0 = time.monotonic()
    api.up(f.name, progress=lambda s: marks.append((time.monotonic(), s)))
    t1 = time.monotonic()
    api.down(name)
    t2 = time.monotonic()
    phase = 0.0
    for (t, s), (t_next, _) in zip(marks, [*marks[1:], (t1, "")], strict=True):
        if s.startswith("containers"):
            phase = t_next - t
    return t1 - t0, phase, t2 - t1


def one_by_one(n: int, image: str) -> float:
    """Seconds to start n containers sequentially with the docker CLI (then removed)."""
    names = [f"cbench-seq-{i}" for i in range(n)]
    t0 = time.monotonic()
    for name in names:
        subprocess.run(["docker", "run", "-d", "--network", "none", "--cpus", "0.1", "--memory",
                        "128m", "--name", name, image], check=True, capture_output=True)
    elapsed = time.monotonic() - t0
    subprocess.run(["docker", "rm", "-f", *names], check=True, capture_output=True)
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,30")
    args = ap.parse_args()
    image = images.build("edge-node")
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        d_up, d_phase, d_down = bring_up(n, "docker")
        h_up, _, h_down = bring_up(n, "host")
        seq = one_by_one(n, image)
        rows.append([n, f"{d_up:.2f}", f"{d_phase:.2f}", f"{d_down:.2f}", f"{h_up:.2f}",
                     f"{h_down:.2f}", f"{(d_up - h_up) / n * 1000:.0f}",
                     f"{d_phase / n * 1000:.0f}", f"{seq:.2f}", f"{seq / n * 1000:.0f}"])
        print(rows[-1], flush=True)
    body = table(["nodes", "docker mesh up s", "of which containers s", "docker mesh down s",
                  "host mesh up s", "host mesh down s", "extra per container ms",
                  "container phase per node ms", "`docker run` one by one s",
                  "one by one per container ms"], rows)
    body += ("\n\nBoth meshes include the controller start, all routes confirmed by barriers, "
             "shaping read back and the all-pairs ICMP check. 'Containers' is the phase that "
             "starts every container (16 at a time through the Docker SDK) and names its "
             "network namespace; 'extra per container' is (docker mesh up - host mesh up) / "
             "nodes. The one-by-one column starts the same containers (no links) sequentially "
             "with `docker run -d --network none`, the way a script without concurrency would.")
    write_section("containers", "Container node bring-up (10 and 30 containers)", body)


if __name__ == "__main__":
    main()
