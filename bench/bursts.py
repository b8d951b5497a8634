"""Shaping of traffic that pauses: 10 messages of 54 kB (a LeNet activation batch) sent one
at a time over a 5.2 Mbit/s class, each after an idle gap, on a bare veth pair between two
namespaces. Compares an HTB class alone (what the testbed used before; Mininet's TCLink
installs one with a 15 kB burst for `bw=`) with an HTB class over a TBF leaf (what the
testbed installs now).
The ideal is 4.97 Mbit/s of goodput (5.2 Mbit/s of 1514-byte frames carrying 1448 bytes).

Usage: python bench/bursts.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import table, write_section  # noqa: E402

CLIENT = r"""
import socket, sys, time
n, k, gap, role = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
def exact(s, m):
    got = 0
    while got < m:
        c = s.recv(m - got)
        assert c
        got += len(c)
if role == "s":
    ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", 7999)); ls.listen(1); print("ready", flush=True)
    c, _ = ls.accept()
    for _ in range(k):
        exact(c, n); c.sendall(b"y")
else:
    s = socket.create_connection(("10.99.0.2", 7999))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    busy = 0.0
    for _ in range(k):
        time.sleep(gap); t = time.perf_counter(); s.sendall(b"x" * n); exact(s, 1)
        busy += time.perf_counter() - t
    print(k * n * 8 / busy / 1e6)
"""
A, B = "tbt-bench-a", "tbt-bench-b"


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def pair(leaf: bool, burst: str) -> None:
    for ns in (A, B):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", "tbtba", "netns", A, "type", "veth", "peer", "name", "tbtbb",
       "netns", B)
    for ns, dev, ip in ((A, "tbtba", "10.99.0.1/24"), (B, "tbtbb", "10.99.0.2/24")):
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", ip, "dev", dev)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", dev, "up")
    tc = ["ip", "netns", "exec", A, "tc"]
    sh(*tc, "qdisc", "add", "dev", "tbtba", "root", "handle", "1:", "htb", "default", "1")
    sh(*tc, "class", "add", "dev", "tbtba", "parent", "1:", "classid", "1:1", "htb", "rate",
       "5200kbit", "ceil", "5200kbit", "burst", burst, "cburst", burst)
    if leaf:
        sh(*tc, "qdisc", "add", "dev", "tbtba", "parent", "1:1", "handle", "10:", "tbf", "rate",
           "5200kbit", "burst", "3250", "limit", str(42 * 1514))


def goodput(gap: float) -> float:
    server = subprocess.Popen(["ip", "netns", "exec", B, sys.executable, "-c", CLIENT, "54000",
                               "10", str(gap), "s"], stdout=subprocess.PIPE, text=True)
    try:
        server.stdout.readline()
        out = subprocess.run(["ip", "netns", "exec", A, sys.executable, "-c", CLIENT, "54000",
                              "10", str(gap), "c"], capture_output=True, text=True, check=True,
                             timeout=60)
        return float(out.stdout)
    finally:
        server.wait(timeout=10)


def main() -> None:
    rows = []
    try:
        for leaf, burst, label in (
                (False, "15k", "Mininet TCLink bw=5.2 (HTB class, burst 15k, its commands)"),
                (False, "3250b", "testbed before: HTB class alone (burst 5 ms)"),
                (True, "3250b", "testbed now: HTB class + TBF leaf (burst 5 ms)")):
            pair(leaf, burst)
            got = [goodput(g) for g in (0.0, 0.02, 0.08, 0.3)]
            rows.append([label, *(f"{g:.2f}" for g in got)])
    finally:
        for ns in (A, B):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    write_section("bursts", "Shaping traffic that pauses: HTB alone vs HTB + TBF leaf",
                  "Goodput (Mbit/s) of 10 messages of 54 kB sent one at a time over a "
                  "5.2 Mbit/s class after each idle gap; ideal 4.97.\n\n"
                  + table(["shaper", "no gap", "20 ms gaps", "80 ms gaps", "300 ms gaps"], rows))


if __name__ == "__main__":
    main()
