"""Hold the emulated nodes at the speed the prediction was priced on (`--hold-speed`).

A node's CPU quota buys CPU-seconds, and on a shared VM a CPU-second of torch work is worth
up to 20% less a minute later (other guests on the host's cores and caches; docs/results.md,
DCEI's host-drift section): a node then runs its steps long at the quota it was given, and
the run misses a prediction that was right when it was made. This module scales every held
node's quota by how much slower the machine computes now than while the prediction's costs
were measured, so a node keeps doing the same work per second. It is time dilation in the
small: the machine's own speed is measured, not the nodes'.

What it reads: the host probe's convolution rate per CPU-second (hostspeed.HostProbe), its
median over the window the kind priced the run on (training's planned-load profile, a video
run's pilot) as the reference, and the median of the last few samples since. A kind with no
such window (streams, requests profile each node alone, at another load) is not held: the
probe's slowdown there is partly the run's own load, which the hold must not pay back.

What it holds: host nodes on this machine and the CPU slices inside them; a container's own
quota sits below its node's and a device's CPU is the board's, so those are not held (run.json
lists them).
"""

from __future__ import annotations

import contextlib
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from testbed import nodes
from testbed.net import cgroups
from testbed.net.ledger import Ledger

WINDOW = 8  # samples (seconds) in the running median: one sample reads 0.8-1.5x another
DEAD_BAND = 0.03  # a change of scale smaller than this is not written
BOUNDS = (0.7, 1.5)  # beyond these the machine is another one: hold what can be held


def scale(reference: float, recent: list[float], bounds: tuple[float, float] = BOUNDS,
          window: int = WINDOW) -> float:
    """How much more CPU a node needs now to do what it did at the reference speed: the
    reference rate over the running median of the latest rates, within `bounds`."""
    current = statistics.median(recent[-window:])
    lo, hi = bounds
    return min(hi, max(lo, reference / current))


@dataclass
class SpeedHold:
    """Scales the held cgroups' CPU quotas; `release` puts back what the ledger gave them."""

    cpu_dirs: dict[str, tuple[Path, float]]  # label -> (its cpu cgroup directory, base cores)
    reference: float  # convolutions per CPU-second in the priced window
    not_held: dict[str, str] = field(default_factory=dict)  # node -> why not
    recent: list[float] = field(default_factory=list)
    current: float = 1.0  # the scale written now
    changes: int = 0

    def update(self, conv_per_cpu_s: float | None) -> float:
        """One probe sample in; the scale in force afterwards."""
        if conv_per_cpu_s:
            self.recent.append(conv_per_cpu_s)
            wanted = scale(self.reference, self.recent)
            if abs(wanted - self.current) >= DEAD_BAND:
                self._write(wanted)
        return self.current

    def release(self) -> None:
        """The ledger's quotas back (also at the start of the next run, after a SIGKILL)."""
        if self.current != 1.0:
            self._write(1.0)

    def _write(self, factor: float) -> None:
        cores = os.cpu_count() or 1
        # slices last when raising (a child may not exceed its node), first when lowering
        order = sorted(self.cpu_dirs.values(), key=lambda v: len(v[0].parts),
                       reverse=factor < self.current)
        for d, base in order:
            with contextlib.suppress(FileNotFoundError):  # a slice its run removed already
                cgroups.set_cpu(d, min(cores, base * factor))
        self.current = factor
        self.changes += 1

    def summary(self) -> dict:
        return {"reference_conv_per_cpu_s": round(self.reference, 1),
                "held": sorted(self.cpu_dirs), "not_held": self.not_held,
                "scale_changes": self.changes, "scale_last": round(self.current, 3)}


def for_run(ledger: Ledger, window: list[float]) -> SpeedHold:
    """The hold of a run on `ledger`'s testbed, from the priced window's convolution rates
    (they also start the running median, so the hold starts at scale 1): every host node on
    this machine with a CPU
    quota (at the ledger's value again, whatever a killed run left) and the CPU slices inside
    it (at the quota their run gave them)."""
    dirs: dict[str, tuple[Path, float]] = {}
    not_held: dict[str, str] = {}
    for node, spec in ledger.topology["nodes"].items():
        kind = nodes.of_node(ledger, node).name
        if kind != "host" or nodes.cluster_host(ledger, node) is not None:
            not_held[node] = f"a {kind} node" if kind != "host" else "on another machine"
            continue
        if not spec.get("cpu"):
            continue  # no quota: nothing to scale
        top = cgroups.node_dirs(ledger.names, node)[0]
        cgroups.set_cpu(top, spec["cpu"])
        dirs[node] = (top, float(spec["cpu"]))
        for d in sorted(top.glob("slice.*")):
            if (cores := cgroups.get_cpu(d)) is not None:
                dirs[f"{node}/{d.name}"] = (d, cores)
    return SpeedHold(dirs, statistics.median(window), not_held, recent=list(window))
