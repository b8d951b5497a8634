"""Changes during a run, measured: timeline timing (lateness over many actions), a rate step
10 -> 2 -> 10 Mbit/s under iperf3 (ours in place vs Mininet's `intf.config(bw=...)`, same
pattern, same machine), failover time when a link with a redundant path goes down, and a
bandwidth trace replayed on a link. Writes its tables to docs/benchmarks.md.

Usage: python bench/dynamics.py [--events 1000] [--spacing-ms 50]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import table, write_section  # noqa: E402
from testbed import api, measure  # noqa: E402
from testbed.net.ledger import Ledger  # noqa: E402
from testbed.topology.timeline import Action  # noqa: E402

PAIR = "nodes: {a: {}, b: {}}\nlinks: [{between: [a, b], bw: 10}]\n"
TRIANGLE = ("nodes: {a: {}, b: {}, c: {}}\nlinks: [{between: [a, b], bw: 10}, "
            "{between: [b, c], bw: 10}, {between: [a, c], bw: 10}]\n")
STEPS = [(0.0, 10.0), (5.0, 2.0), (10.0, 10.0)]  # (t_s, Mbit/s)
SECONDS = 15

MININET_STEP = r"""
import json, subprocess, sys, time
from functools import partial
from mininet.net import Mininet
from mininet.link import TCLink
from mininet.node import OVSSwitch
from mininet.log import setLogLevel
setLogLevel("error")
steps, seconds = json.loads(sys.argv[1]), int(sys.argv[2])
net = Mininet(switch=partial(OVSSwitch, datapath="user", failMode="standalone"),
              link=TCLink, controller=None)
h1, h2 = net.addHost("h1"), net.addHost("h2")
s1, s2 = net.addSwitch("s1"), net.addSwitch("s2")
net.addLink(h1, s1)
net.addLink(h2, s2)
link = net.addLink(s1, s2, bw=steps[0][1])
net.start()
try:
    for h in (h1, h2):  # the userspace datapath passes no checksum offload (PLATFORM.md)
        h.cmd(f"ethtool -K {h.defaultIntf()} tx off")
    time.sleep(2)
    h1.cmd("ping -c 3 -q " + h2.IP())
    server = h2.popen(["iperf3", "-s", "-1", "-J"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    client = h1.popen(["iperf3", "-c", h2.IP(), "-t", str(seconds), "-i", "1"],
                      stdout=subprocess.DEVNULL)
    t0 = time.monotonic()
    for t, bw in steps[1:]:
        time.sleep(max(0, t0 + t - time.monotonic()))
        link.intf1.config(bw=bw)
        link.intf2.config(bw=bw)
    client.wait()
    out = server.communicate(timeout=30)[0]
finally:
    net.stop()
print(json.dumps(json.loads(out)["intervals"]))
"""


def up(text: str, name: str) -> Ledger:
    path = Path(tempfile.mkdtemp()) / f"{name}.yaml"
    path.write_text(f"name: {name}\n{text}")
    return api.up(path)


def server_seconds(report: list[dict]) -> list[float]:
    """Per-second goodput; the last, partial interval is left out."""
    return [iv["sum"]["bits_per_second"] / 1e6 for iv in report
            if iv["sum"]["seconds"] > 0.9]


def iperf_with(name: str, seconds: int, during) -> list[float]:
    """Per-second receiver goodput of a->b while `during(t0)` runs changes."""
    b_ip = api.status(name)["nodes"]["b"]["ip"]
    server = api.popen(name, "b", ["iperf3", "-s", "-1", "-J"], stdout=subprocess.PIPE,
                       text=True)
    time.sleep(0.5)
    client = api.popen(name, "a", ["iperf3", "-c", b_ip, "-t", str(seconds), "-i", "1"],
                       stdout=subprocess.DEVNULL)
    t0 = time.monotonic()
    changer = threading.Thread(target=during, args=(t0,))
    changer.start()
    client.wait(timeout=seconds + 30)
    changer.join()
    return server_seconds(json.loads(server.communicate(timeout=30)[0])["intervals"])


def step_errors(goodput: list[float], steps: list[tuple[float, float]]) -> list[float]:
    """Relative error of each full second after each step, against the step's ideal."""
    errors = []
    for k, value in enumerate(goodput):
        rate = [bw for t, bw in steps if t <= k][-1]
        starts = [t for t, _ in steps]
        if any(t < k + 1 and t > k for t in starts) or k in starts:
            continue  # the second a change happens in, and its first second
        ideal = measure.ideal_goodput_mbit(rate)
        errors.append(abs(value - ideal) / ideal)
    return errors


def rate_step() -> list[list]:
    ledger = up(PAIR, "dyn-step")
    try:
        def ours(t0: float) -> None:
            for t, bw in STEPS[1:]:
                time.sleep(max(0.0, t0 + t - time.monotonic()))
                api.set_link(ledger.name, "a", "b", bw=bw)

        mine = iperf_with(ledger.name, SECONDS, ours)
    finally:
        api.down(ledger.name)
    res = subprocess.run(["/usr/bin/python3", "-c", MININET_STEP, json.dumps(STEPS),
                          str(SECONDS)], capture_output=True, text=True, timeout=300)
    theirs = (server_seconds(json.loads(res.stdout.strip().splitlines()[-1]))
              if res.returncode == 0 else [])
    rows = []
    for label, got in (("testbed link set (tc class change)", mine),
                       ("Mininet intf.config(bw=...)", theirs)):
        err = step_errors(got, STEPS)
        at_change = " / ".join(f"{got[int(t)]:.2f}" for t, _ in STEPS[1:] if int(t) < len(got))
        rows.append([label, " ".join(f"{v:.2f}" for v in got), at_change or "-",
                     f"{max(err) * 100:.1f}%" if err else (res.stderr[-200:] or "-")])
    return rows


def event_timing(events: int, spacing_ms: float) -> list:
    from testbed.experiment.timeline import Player

    ledger = up(PAIR, "dyn-timing")
    try:
        actions = [Action(1.0 + k * spacing_ms / 1000, k, "set", ("a", "b"),
                          {"bw": 5.0 + (k % 2)}, 0) for k in range(events)]
        player = Player(ledger, actions, time.monotonic()).start()
        player._thread.join()
        player.stop()
        late = pd.Series([r["late_ms"] for r in player.rows if r["what"] == "set"])
        took = pd.Series([(r["done_s"] - r["applied_s"]) * 1000 for r in player.rows
                          if r["what"] == "set"])
    finally:
        api.down(ledger.name)
    return [events, spacing_ms, f"{late.quantile(0.5):.2f}", f"{late.quantile(0.99):.2f}",
            f"{late.max():.2f}", f"{took.quantile(0.5):.1f}", f"{took.quantile(0.99):.1f}"]


def failover(trials: int = 3) -> list[float]:
    """ms without replies (10 ms ping interval) when the direct link a-c goes down."""
    gaps = []
    ledger = up(TRIANGLE, "dyn-failover")
    try:
        c_ip = api.status(ledger.name)["nodes"]["c"]["ip"]
        for _ in range(trials):
            ping = api.popen(ledger.name, "a", ["ping", "-D", "-i", "0.01", "-c", "400", "-W",
                                                "1", c_ip], stdout=subprocess.PIPE, text=True)
            time.sleep(1.5)
            api.set_link_state(ledger.name, "a", "c", up=False)
            out = ping.communicate(timeout=60)[0]
            stamps = [float(m.group(1)) for m in re.finditer(r"^\[(\d+\.\d+)\] \d+ bytes",
                                                             out, re.M)]
            gaps.append(max(b - a for a, b in zip(stamps, stamps[1:], strict=False)) * 1000)
            api.set_link_state(ledger.name, "a", "c", up=True)
            time.sleep(2)
    finally:
        api.down(ledger.name)
    return gaps


def trace_replay() -> tuple[list[float], list[float]]:
    """A trace of 3-second steps replayed through a timeline-like schedule; per-second
    goodput beside the ideal of the rate in force."""
    trace = [(0.0, 8.0), (3.0, 4.0), (6.0, 2.0), (9.0, 6.0)]
    ledger = up(PAIR, "dyn-trace")
    try:
        def play(t0: float) -> None:
            for t, bw in trace:
                time.sleep(max(0.0, t0 + t - time.monotonic()))
                api.set_link(ledger.name, "a", "b", bw=bw)

        got = iperf_with(ledger.name, 12, play)
    finally:
        api.down(ledger.name)
    ideal = [measure.ideal_goodput_mbit([bw for t, bw in trace if t <= k][-1])
             for k in range(len(got))]
    return got, ideal


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--spacing-ms", type=float, default=50.0)
    args = ap.parse_args()
    timing = event_timing(args.events, args.spacing_ms)
    print("timing", timing, flush=True)
    steps = rate_step()
    print("steps", steps, flush=True)
    gaps = failover()
    print("failover", gaps, flush=True)
    got, ideal = trace_replay()
    print("trace", got, ideal, flush=True)
    errs = [abs(g - i) / i for k, (g, i) in enumerate(zip(got, ideal, strict=True))
            if k % 3 != 0]  # the second of each change left out
    body = "### Timeline timing\n\n" + table(
        ["actions", "spacing ms", "late p50 ms", "late p99 ms", "late max ms",
         "apply p50 ms", "apply p99 ms"], [timing])
    body += ("\n\nEach action is a rate change on a link (5 <-> 6 Mbit/s) played by the "
             "run's timeline player: `late` is when it started against its planned offset "
             "on the monotonic clock, `apply` how long the change and its read-back took.")
    body += "\n\n### Rate step 10 -> 2 -> 10 Mbit/s at 5 s and 10 s under iperf3\n\n" + table(
        ["tool", "per-second goodput Mbit/s", "in the seconds of the changes",
         "worst error, full seconds after a step"], steps)
    body += ("\n\nIdeal goodput = rate x 1448/1514 (9.57 and 1.91 Mbit/s). The second in which "
             "a change happens is left out of the error; its own goodput is shown: Mininet "
             "deletes and re-creates the link's qdiscs for every change (what was queued is "
             "dropped), the testbed changes the HTB class in place.")
    body += ("\n\n### Failover\n\nDirect link of a triangle taken down under `ping -i 0.01`: "
             f"longest gap between replies {', '.join(f'{g:.0f}' for g in gaps)} ms "
             f"({len(gaps)} trials; goal <= 200 ms).")
    body += ("\n\n### Bandwidth trace replayed (8, 4, 2, 6 Mbit/s, 3 s each)\n\n" + table(
        ["second", *(str(k) for k in range(len(got)))],
        [["measured Mbit/s", *(f"{g:.2f}" for g in got)],
         ["ideal Mbit/s", *(f"{i:.2f}" for i in ideal)]])
             + f"\n\nWorst error outside the seconds of a change: {max(errs) * 100:.1f}% "
             "(goal 5%).")
    write_section("dynamics", "Changes during a run (#17)", body)


if __name__ == "__main__":
    main()
