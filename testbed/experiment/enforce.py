"""Enforcement of a Plan's flows, for every workload kind: paths and rates go through the
controller client in one batch per decision, what each installed flow carried on each switch
is recorded when it is removed (flows.csv), and the run survives its controller: a dead or
stuck controller is restarted (switches keep forwarding meanwhile, the new one re-installs
the recorded flows), flows it did not know are installed again, and each incident is kept
for run.json.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from testbed.errors import TestbedError
from testbed.net.controller import ensure_controller
from testbed.net.ledger import Ledger
from testbed.routing import FlowSpec
from testbed.sdn import FlowClient

Clock = Callable[[], float]


@dataclass
class FlowSet:
    """The flows one unit of work (a job, a training round, a batch of requests) holds on the
    network now, and one flows.csv row per flow per installation."""

    owner: str
    labels: list[dict]  # per flow: the columns flows.csv gives it beyond its spec
    specs: list[FlowSpec] = field(default_factory=list)  # as installed (paths, line rates)
    ids: list[int] = field(default_factory=list)  # controller ids while installed
    installed_s: float = 0.0
    rows: list[dict] = field(default_factory=list)


class Enforcer:
    """Installs and removes FlowSets through one controller client; thread-safe recovery."""

    def __init__(self, ledger: Ledger, clock: Clock, progress: Callable[[str], None]) -> None:
        self.ledger, self.clock, self.progress = ledger, clock, progress
        self.incidents: list[dict] = []  # controller losses and what was done about them
        self._recovering = threading.Lock()
        self._resync = False
        self.client = FlowClient(ledger, recover=self._recover)

    def incident(self, what: str, action: str) -> None:
        self.incidents.append({"t_s": round(self.clock(), 3), "what": what, "action": action})

    # ---- controller loss -------------------------------------------------------------------
    def _recover(self) -> bool:
        """Restart a dead or stuck controller (called by the flow client when the controller
        does not answer, from any thread); returns whether it was restarted."""
        with self._recovering:
            try:
                restarted = ensure_controller(self.ledger)
            except TestbedError as e:
                self.incident("controller lost", f"restart failed: {e}")
                return False
            if restarted:
                self.incident("controller lost", f"restarted (pid {self.ledger.controller.pid}"
                                                  "); recorded flows re-installed")
                self.progress("the controller was lost: restarted it")
                self._resync = True
            return restarted

    def watch(self, active: Iterable[FlowSet], lost: Callable[[str, str], None]) -> None:
        """Check the controller; after a restart, install again the active flows the new
        controller does not know (the old one died before recording them). `lost(owner,
        reason)` is told of flows that could not be installed again."""
        if not (self.ledger.controller and self.ledger.controller.alive()):
            self._recover()
        if not self._resync:
            return
        self._resync = False
        with contextlib.suppress(TestbedError):
            known = {f["id"] for f in self.client.list()}
            for fs in active:
                if not fs.ids or set(fs.ids) <= known:
                    continue
                with contextlib.suppress(TestbedError):
                    self.client.remove([i for i in fs.ids if i in known])
                self.client.forget_rates([replace(s, id=i) for s, i in
                                          zip(fs.specs, fs.ids, strict=True)])
                try:
                    self._installed(fs, fs.specs, self.client.add(fs.specs))
                    self.incident(f"{fs.owner}: flows unknown to the restarted controller",
                                  "installed again")
                except TestbedError as e:
                    lost(fs.owner, f"its flows were lost with the controller and could not be "
                                   f"installed again: {e}")

    # ---- install and remove -----------------------------------------------------------------
    def apply(self, moved: list[tuple[FlowSet, list[FlowSpec]]],
              new: list[tuple[FlowSet, list[FlowSpec]]]) -> dict[str, str]:
        """One decision, one batch: remove the moved sets' flows, then install the moved and
        the new ones in one call. If the batch is refused, each set is tried alone so that
        only the culprits fail; returns owner -> reason for those."""
        if moved:
            self.remove([fs for fs, _ in moved])
        batch = [(fs, specs) for fs, specs in [*moved, *new] if specs]
        if not batch:
            return {}
        try:
            added = self.client.add([s for _, specs in batch for s in specs])
        except TestbedError:
            failed = {}
            for fs, specs in batch:
                try:
                    self._installed(fs, specs, self.client.add(specs))
                except TestbedError as e:
                    failed[fs.owner] = f"enforcing its flows: {e}"
            return failed
        for fs, specs in batch:
            self._installed(fs, specs, added[:len(specs)])
            added = added[len(specs):]
        return {}

    def _installed(self, fs: FlowSet, specs: list[FlowSpec], added: list[FlowSpec]) -> None:
        fs.ids = [f.id for f in added]
        fs.specs, fs.installed_s = list(specs), self.clock()

    def remove(self, sets: list[FlowSet]) -> None:
        """Record what each installed flow carried on each switch of its path (one row per
        installation: a scheduler may move a running unit's flows), then remove the flows of
        all these sets in one call."""
        carried = {f["id"]: f["hops"] for f in self.client.list()}
        for fs in sets:
            for label, spec, fid in zip(fs.labels, fs.specs, fs.ids, strict=True):
                fs.rows.append({
                    **label, "path": "-".join(spec.path), "rate_mbit_line": spec.rate_mbit,
                    "sport": spec.sport, "dport": spec.dport, "installed_s": fs.installed_s,
                    "removed_s": self.clock(), "hop_bytes": " ".join(
                        f"{h['node']}:{h['bytes']}" for h in carried.get(fid, [])),
                    "hop_reverse_bytes": " ".join(  # the replies (dst -> src)
                        f"{h['node']}:{h.get('reverse_bytes', 0)}"
                        for h in carried.get(fid, []))})
        self.client.remove([fid for fs in sets for fid in fs.ids])
        for fs in sets:
            fs.ids = []

    def release(self, fs: FlowSet) -> None:
        """Remove a set's flows if it holds any (never raises: the run goes on)."""
        if fs.ids:
            with contextlib.suppress(TestbedError):
                self.remove([fs])
