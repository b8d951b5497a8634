"""Samples, at a fixed interval during a run, the switch port counters (per link direction,
from the controller), each node's CPU time and memory (as its kind reports them, read where
the node lives: `usage`, Processes.usage) and this machine's speed against the start's and
its steal (hostspeed.HostProbe)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from testbed import nodes
from testbed.errors import TestbedError
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

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.sample()  # a last sample so totals cover the whole run
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
        self.host.append({**self.probe.sample(t), "phase": "run"})
