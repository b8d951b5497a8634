"""The shape of a run whose whole workload is one unit served by a group of processes (a
split training, a set of camera streams): the group starts together, holds one set of flows,
ends when every process has exited cleanly and fails with the first that did not. A kind of
this shape subclasses `SingleUnit` and fills in `prepare`, `start` and `write`."""

from __future__ import annotations

import json
import subprocess
import time

from testbed.experiment.enforce import FlowSet
from testbed.experiment.loop import Experiment

# Open vSwitch's userspace datapath adds packet counts to the OpenFlow counters about every
# 0.5 s: flows are removed (and their bytes recorded) once the last packets are counted
COUNTERS_SETTLE_S = 1.0


class SingleUnit(Experiment):
    unit_name = ""  # the one unit's name in the decision loop
    not_placed_reason = "the strategy placed nothing"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fs = FlowSet(self.unit_name, [])
        self.procs: dict[str, subprocess.Popen] = {}  # label -> process
        self.status, self.reason = "waiting", ""

    def poll(self) -> set[str]:
        if self.status != "running":
            return {self.unit_name} if self.status == "failed" else set()
        codes = {label: p.poll() for label, p in self.procs.items()}
        bad = [label for label, c in codes.items() if c not in (None, 0)]
        if bad:
            self.stop_unit(self.unit_name, "failed", f"{bad[0]} exited with {codes[bad[0]]}: "
                           f"{self.processes.last_log_line(bad[0])}")
            return {self.unit_name}
        if all(c == 0 for c in codes.values()):
            self.status = "done"
            time.sleep(COUNTERS_SETTLE_S)
            self.enforcer.release(self.fs)
            return {self.unit_name}
        return set()

    def running(self) -> list[str]:
        return [self.unit_name] if self.status == "running" else []

    def stop_unit(self, name: str, status: str, reason: str) -> None:
        self.processes.stop(list(self.procs.values()))
        self.status, self.reason = status, reason
        self.enforcer.release(self.fs)

    def not_placed(self, units: list) -> None:
        self.status, self.reason = "not placed", self.not_placed_reason

    def flow_sets(self) -> list[FlowSet]:
        return [self.fs]

    def close(self) -> None:
        self.processes.stop(list(self.procs.values()))

    def read_trace(self, name: str) -> list[dict]:
        """A JSON-lines trace the processes wrote (fetched into the run's traces/)."""
        path = self.out / "traces" / name
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
