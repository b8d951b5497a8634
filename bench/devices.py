"""What joining a physical device costs: attach time per device, and the extra latency and the
throughput ceiling the VXLAN tunnel adds, against host nodes on the same links.

The devices are "fake boards" (tests/fakeboard.py): a real sshd in a network namespace behind a
management veth, so SSH, SFTP and VXLAN are real but the management network is as fast as a
veth; on real boards add the management network's own round trip and bandwidth.

Usage: python bench/devices.py [--devices 1,3] [--pings 100]
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
from testbed import api, measure  # noqa: E402
from tests.fakeboard import FakeBoard  # noqa: E402


def topology(boards: list[FakeBoard], as_devices: bool, name: str) -> str:
    """e1 - e2, and d0..dK each linked to e1; links unshaped (the ceiling is the tunnel's)."""
    nodes = ["  e1: {}", "  e2: {}"]
    for i, b in enumerate(boards):
        nodes.append(f"  d{i}: {{kind: device, ssh: {b.ssh_yaml()}}}" if as_devices
                     else f"  d{i}: {{}}")
    links = ["  - {between: [e1, e2]}"] + [f"  - {{between: [d{i}, e1]}}"
                                            for i in range(len(boards))]
    return f"name: {name}\nnodes:\n" + "\n".join(nodes) + "\nlinks:\n" + "\n".join(links) + "\n"


def up_timed(text: str) -> tuple[float, dict[str, float]]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(text)
    marks: list[tuple[float, str]] = []
    t0 = time.monotonic()
    api.up(f.name, progress=lambda s: marks.append((time.monotonic(), s)))
    t1 = time.monotonic()
    phases = {s: b - a for (a, s), (b, _) in zip(marks, [*marks[1:], (t1, "")], strict=True)}
    phases["checks"] = marks[0][0] - t0  # SSH log-in and device checks come before any build
    return t1 - t0, phases


def ping_ms(name: str, src: str, dst: str, count: int) -> float:
    ip = api.status(name)["nodes"][dst]["ip"]
    res = api.run_in_node(name, src, ["ping", "-q", "-c", str(count), "-i", "0.01", ip],
                          timeout=120)
    return float(res.stdout.split("=")[-1].split("/")[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", default="1,3")
    ap.add_argument("--pings", type=int, default=100)
    args = ap.parse_args()
    counts = [int(x) for x in args.devices.split(",")]
    work = Path(tempfile.mkdtemp(prefix="devbench-"))
    boards = [FakeBoard(work, i).start() for i in range(max(counts))]
    attach_rows, path_rows = [], []
    try:
        for k in counts:
            dev_up, phases = up_timed(topology(boards[:k], True, f"dbench-dev{k}"))
            attach = next(v for s, v in phases.items() if s.endswith(": attach"))
            if k == max(counts):
                rtt_dev = ping_ms(f"dbench-dev{k}", "e1", "d0", args.pings)
                rtt_host = ping_ms(f"dbench-dev{k}", "e1", "e2", args.pings)
                to_dev = measure.iperf3(f"dbench-dev{k}", "e1", "d0", seconds=5, omit=1)
                from_dev = measure.iperf3(f"dbench-dev{k}", "d0", "e1", seconds=5, omit=1)
                to_host = measure.iperf3(f"dbench-dev{k}", "e1", "e2", seconds=5, omit=1)
                t0 = time.monotonic()
                for _ in range(5):
                    api.run_in_node(f"dbench-dev{k}", "d0", ["true"], timeout=30)
                exec_s = (time.monotonic() - t0) / 5
            t0 = time.monotonic()
            api.down(f"dbench-dev{k}")
            dev_down = time.monotonic() - t0
            host_up, _ = up_timed(topology(boards[:k], False, f"dbench-host{k}"))
            api.down(f"dbench-host{k}")
            attach_rows.append([k, f"{dev_up:.2f}", f"{host_up:.2f}",
                                f"{(dev_up - host_up) / k * 1000:.0f}",
                                f"{phases['checks'] * 1000:.0f}",
                                f"{attach * 1000:.0f}", f"{dev_down:.2f}"])
            print(attach_rows[-1], flush=True)
        path_rows = [
            ["e1 -> host node e2 (veth link)", f"{rtt_host:.3f}", f"{to_host:.0f}", "-"],
            ["e1 -> device d0 (veth link + VXLAN tunnel)", f"{rtt_dev:.3f}", f"{to_dev:.0f}",
             f"{from_dev:.0f}"],
            ["extra from the tunnel", f"{rtt_dev - rtt_host:+.3f}",
             f"{(to_dev - to_host) / to_host * 100:+.0f}%", "-"]]
        print(path_rows, f"exec {exec_s * 1000:.0f} ms", flush=True)
    finally:
        for b in boards:
            b.close()
        subprocess.run(["rm", "-rf", str(work)])
    body = table(["devices", "up with devices s", "up with host nodes instead s",
                  "extra per device ms", "SSH log-in + checks ms",
                  "attach ms (tunnel, shaping, SFTP deploy)", "down s"], attach_rows)
    body += ("\n\nDevices are checked and attached in parallel (one SSH session each); the "
             "check and attach columns cover all devices together.")
    body += "\n\n" + table(["path (unshaped links)", f"ping RTT ms (mean of {args.pings})",
                            "iperf3 to Mbit/s", "iperf3 back Mbit/s"], path_rows)
    body += (f"\n\nA command on a device through `testbed exec`/the runner's relay (SSH log-in, "
             f"run `true`, exit code back): {exec_s * 1000:.0f} ms. Devices are fake boards: a "
             "real OpenSSH server in a network namespace behind a management veth; the "
             "throughput ceiling is this host's (userspace OVS, 2 cores), and on a real board "
             "the management network's own round trip and bandwidth add to the tunnel's.")
    write_section("devices", "Physical devices: attach time and tunnel overhead", body)


if __name__ == "__main__":
    main()
