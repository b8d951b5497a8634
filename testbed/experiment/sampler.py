"""Samples, at a fixed interval during a run, the switch port counters (per link direction,
from the controller), each node's CPU time and memory (as its kind reports them, read where
the node lives: `usage`, Processes.usage) and this machine's speed against the start's and
its steal (hostspeed.HostProbe); with a speed hold, each sample also sets the nodes' CPU quotas
by the machine's speed (speedhold)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from testbed import nodes
from testbed.errors import TestbedError
from testbed.experiment import speedhold
from testbed.experiment.hostspeed import HostProbe
from testbed.net.ledger import Ledger
from testbed.sdn import FlowClient

Usage = Callable[[dict[str | None, list[str]]], dict[str, tuple[float, int] | None]]


class Sampler:
    def __init__(self, ledger: Ledger, client: FlowClient, usage: Usage,
                 interval_s: float = 1.0, probe: HostProbe | None = None) -> None:
        self.ledger, self.client, self.usage, self.interval_s = ledger, client, usage, interval_s
        # the machine's speed; a probe that watched the set-up hands over its rows, which
        # host.csv keeps before the run's (negative t_s, phase "setup")
        self.probe = probe or HostProbe()
        early = self.probe.stop_watching()
        self.by_host: dict[str | None, list[str]] = {}
        for n in ledger.topology["nodes"]:
            self.by_host.setdefault(nodes.cluster_host(ledger, n), []).append(n)
        self.links: list[dict] = []
        self.nodes: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.t0 = time.monotonic()
        self.host: list[dict] = [{**row, "t_s": round(t - self.t0, 3), "phase": "setup"}
                                 for t, row in early]
        self.hold: speedhold.SpeedHold | None = None
        self.hold_note = "off"  # run.json's speed_hold when no hold was made

    def hold_from(self, t_from: float, t_to: float) -> str:
        """Hold the nodes from now on at the machine's speed over [t_from, t_to) (the run's
        clock). Returns what was done, for the run's progress."""
        rates = [r["conv_per_cpu_s"] for r in self.host
                 if t_from <= r["t_s"] < t_to and r.get("conv_per_cpu_s")]
        if len(rates) < 3:
            self.hold_note = (f"not held: {len(rates)} samples of the machine's speed in the "
                              "priced window (3 needed; torch kinds only)")
            return self.hold_note
        self.hold = speedhold.for_run(self.ledger, rates)
        return (f"holding {len(self.hold.cpu_dirs)} quotas at the machine's speed of the "
                f"priced window ({len(rates)} samples)")

    def hold_summary(self) -> dict | str:
        return self.hold.summary() if self.hold else self.hold_note

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.sample()  # a last sample so totals cover the whole run
        if self.hold:
            self.hold.release()
        self.probe.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        t = round(time.monotonic() - self.t0, 3)
        with contextlib.suppress(TestbedError):
            for node, ports in self.client.ports().items():
                for peer, c in ports.items():
                    self.links.append({"t_s": t, "node": node, "to": peer,
                                       "tx_bytes": c["tx_bytes"], "rx_bytes": c["rx_bytes"],
                                       "tx_dropped": c["tx_dropped"]})
        for node, used in self.usage(self.by_host).items():  # a lost host's nodes: none
            if used is None:  # sampled another way (a device over SSH: board_stats.csv)
                continue
            cpu_s, mem = used
            self.nodes.append({"t_s": t, "node": node, "cpu_s": cpu_s, "memory_bytes": mem})
        row = {**self.probe.sample(t), "phase": "run"}
        if self.hold:  # the scale in force from this sample on
            row["quota_scale"] = round(self.hold.update(row["conv_per_cpu_s"]), 3)
        self.host.append(row)
