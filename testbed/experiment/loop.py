"""The decision loop every workload kind runs: units of work (jobs, training rounds, request
batches) arrive, the scheduler decides on the waiting ones, the kind enforces and starts what
was placed, finished units release their resources and let the scheduler decide again.

Whatever ends the loop (all done, nothing placeable, Ctrl-C, an error), every running unit
is stopped, flows are removed through a live controller, and the records are written from
what was recorded. A kind subclasses `Experiment` and fills in the marked hooks.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pandas as pd

from testbed import nodes
from testbed.errors import InputError, TestbedError
from testbed.experiment import hostspeed, records
from testbed.experiment.enforce import Enforcer, FlowSet
from testbed.experiment.options import RunOptions
from testbed.experiment.processes import Processes
from testbed.experiment.profile import PROBE_PROGRAM, Profile, profile
from testbed.experiment.sampler import Sampler
from testbed.experiment.timeline import Player, current_view, load_actions
from testbed.net.ledger import Ledger
from testbed.net.links import link_states
from testbed.schedulers import get as get_scheduler
from testbed.schedulers.plan import Plan
from testbed.topology.model import Topology
from testbed.topology.timeline import WORKLOAD_EVENTS, Action

Progress = Callable[[str], None]
POLL_S = 0.05
WATCH_S = 0.5


class Experiment:
    """One run of one workload kind on a running testbed. Not reusable across runs."""

    kind = ""
    program = PROBE_PROGRAM.name  # the workloads/ program the kind's processes run

    def __init__(self, ledger: Ledger, units: list, opts: RunOptions,
                 progress: Progress = lambda s: None) -> None:
        self.ledger, self.units, self.opts, self.progress = ledger, units, opts, progress
        self.topology = Topology.from_dict(ledger.topology, ledger.topology_file)
        self.actions = load_actions(ledger, self.topology, opts.timeline, opts.duration_s,
                                    opts.seed)  # a bad timeline: refused before anything is made
        self.out = opts.out_dir
        for sub in ("traces", "decisions"):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
        self.t0 = time.monotonic()
        self.enforcer = Enforcer(ledger, self.now, progress)
        self.processes = Processes(ledger, self.out, self.program, opts.unprivileged)
        self.scheduler = get_scheduler(opts.scheduler, self.kind)
        self.plan = Plan(opts.scheduler)
        self.profile: Profile | None = None

    def now(self) -> float:
        return time.monotonic() - self.t0

    @property
    def incidents(self) -> list[dict]:
        return self.enforcer.incidents

    # ---- hooks of a kind -------------------------------------------------------------------
    def start(self, placed: list, plan: Plan) -> None:
        """Enforce `plan` (its new units are `placed`) and start their processes."""
        raise NotImplementedError

    def poll(self) -> set[str]:
        """Names of units that ended since the last poll (done or failed)."""
        raise NotImplementedError

    def running(self) -> list[str]:
        raise NotImplementedError

    def stop_unit(self, name: str, status: str, reason: str) -> None:
        raise NotImplementedError

    def not_placed(self, units: list) -> None:
        """Record units that never got resources (nothing left could free any)."""
        raise NotImplementedError

    def flow_sets(self) -> list[FlowSet]:
        """Every FlowSet of the run (running or not)."""
        raise NotImplementedError

    def write(self) -> pd.DataFrame:
        """The kind's own tables; returns its per-unit table."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Before the clock starts: what lives for the whole run (e.g. services)."""

    def take_workload_events(self, events: list[Action], source: str) -> None:
        """The timeline's workload events (e.g. a camera's pedestrian count) from file
        `source`, before `prepare`; a kind that has no use for them refuses the run."""
        if events:
            e = events[0]
            raise InputError(f"{source}: timeline.events[{e.event}]: {e.what} at {e.t_s:g} s "
                             f"changes a workload that a {self.kind} run does not have; fix: "
                             "drop it or run a workload it applies to (pedestrians: video)")

    def close(self) -> None:
        """After the last unit: stop what `prepare` started."""

    def metadata(self) -> dict[str, Any]:
        """What run.json says about the workload beyond what every run records."""
        return {}

    def torch_steps(self) -> bool:
        """Whether the kind's steps are torch models (`--compute torch`, or always for kinds
        that only run models): host.csv then times a convolution too."""
        return self.opts.compute == "torch"

    # ---- shared ------------------------------------------------------------------------------
    def decide(self, waiting: list) -> list:
        """Ask the scheduler about the waiting units, keep its decision on disk, start what it
        placed; returns the units still waiting."""
        now, t0 = self.now(), time.perf_counter()
        new = self.scheduler(self.profile.view, self.plan, waiting, now)
        took = time.perf_counter() - t0
        new = replace(new, decision_s=took)
        n = len(list((self.out / "decisions").iterdir()))
        (self.out / "decisions" / f"{n:04d}.json").write_text(new.to_json())
        placed = [u for u in waiting if u.name not in new.waiting]
        self.start(placed, new)
        self.progress(f"t={now:.1f}s {self.opts.scheduler}: placed {len(placed)}, "
                      f"waiting {len(new.waiting)} ({took * 1000:.0f} ms)")
        return [u for u in waiting if u.name in new.waiting]

    def _network_changed(self, waiting: list) -> list:
        """A timeline changed the network: the scheduler plans with the network as it is now
        and decides again, running units included (their flows move if the Plan says so)."""
        self.profile = replace(self.profile, view=current_view(
            self.ledger.name, self.profile.view, self.profile.speeds,
            self.profile.gops_per_core))
        try:
            return self.decide(waiting)
        except (TestbedError, ValueError, KeyError) as e:  # e.g. no path left between tasks
            self.enforcer.incident("re-plan after a network change failed", str(e))
            return waiting

    def links_down_note(self) -> str:
        """'; links down now: a-b' when the network lost links (a likely reason of a stall)."""
        down = [i for i, st in link_states(self.ledger).items() if st == "down"]
        if not down:
            return ""
        links = self.ledger.topology["links"]
        return "; links down now: " + ", ".join("-".join(links[i]["between"]) for i in down)

    def _active_flow_sets(self) -> list[FlowSet]:
        running = set(self.running())
        return [fs for fs in self.flow_sets() if fs.owner in running]

    def _watch(self) -> None:
        self.enforcer.watch(self._active_flow_sets(),
                            lambda owner, why: self.stop_unit(owner, "failed", why))

    def run(self) -> pd.DataFrame:
        self.processes.start()  # on a cluster: each host's actor (a second or so)
        try:
            return self._run(self.actions)
        finally:  # however the run failed, no process or host actor outlives it
            self.processes.finish()

    def _run(self, actions: list[Action]) -> pd.DataFrame:
        # the machine's speed from before profiling on: the run's is then set beside it
        probe = hostspeed.HostProbe(torch=self.torch_steps()).watch(self.opts.sample_s)
        try:
            network_actions = self._set_up(actions, probe)
        except BaseException:
            probe.close()
            raise
        return self._go(network_actions)

    def _set_up(self, actions: list[Action], probe: hostspeed.HostProbe) -> list[Action]:
        """Profile, take the workload's events, prepare the kind; then the run's clock starts
        with its sampler. Returns the timeline's actions on the network."""
        self.progress("profiling node speeds")
        self.profile = profile(self.ledger, self.topology, self.opts.compute,
                               self.opts.gops_per_core, self.opts.k_paths)
        self.opts.gops_per_core = self.profile.gops_per_core
        for node, why in self.profile.unable.items():
            self.progress(f"node {node} is left out of placement: {why}")
            self.enforcer.incident(f"node {node} left out of placement", why)
        self.take_workload_events([a for a in actions if a.what in WORKLOAD_EVENTS],
                                  str(self.opts.timeline or self.ledger.topology_file))
        actions = [a for a in actions if a.what not in WORKLOAD_EVENTS]  # the network's
        self.prepare()
        self.sampler = Sampler(self.ledger, self.enforcer.client, self.processes.usage,
                               self.opts.sample_s, probe=probe).start()
        return actions

    def _go(self, actions: list[Action]) -> pd.DataFrame:
        self.t0 = self.sampler.t0
        self.epoch0 = time.time() - (time.monotonic() - self.t0)
        self.timeline = Player(self.ledger, actions, self.t0)
        self.collectors: list = []
        pending = sorted(self.units, key=lambda u: (u.arrival_s, u.name))
        waiting: list = []
        last_watch = 0.0
        try:  # from here on, whatever fails, the finally stops the sampler's helper and the rest
            self.timeline.start()
            if actions:
                self.progress(f"timeline: {len(actions)} changes planned")
            for c in self._collectors():
                self.collectors.append(c.start())
            while pending or waiting or self.running():
                if self.now() - last_watch >= WATCH_S:
                    self._watch()
                    last_watch = self.now()
                changed = False
                while pending and pending[0].arrival_s <= self.now():
                    waiting.append(pending.pop(0))
                    changed = True
                ended = self.poll()
                if ended:
                    self.plan = self.plan.without(ended)
                    changed = True
                if self.timeline.changes():
                    waiting = self._network_changed(waiting)
                if changed and waiting:
                    waiting = self.decide(waiting)
                if waiting and not pending and not self.running():
                    self.not_placed(waiting)  # nothing left could free resources for them
                    break
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            self.progress("interrupted: stopping every task, keeping what was recorded")
            for name in self.running():
                self.stop_unit(name, "interrupted", "Ctrl-C")
        finally:  # whatever ended the loop, the recorded traces become CSV files
            self.timeline.stop()
            self.timeline.write(self.out)
            for name in self.running():
                self.stop_unit(name, "interrupted", "run ended")
            self.close()
            self.sampler.stop()
            for c in self.collectors:
                c.stop()
            with contextlib.suppress(TestbedError):
                self._watch()  # flows are removed through a live controller
            for fs in self.flow_sets():
                self.enforcer.release(fs)
            leaked = [i for fs in self.flow_sets() for i in fs.ids]
            if leaked:
                self.enforcer.incident("flows not removed",
                                       f"ids {leaked}: `testbed flow rm --all`")
            self.processes.finish()
            table = self.write()
            records.write_shared(self.out, self.sampler, self.collectors, self.epoch0,
                                 [row for fs in self.flow_sets() for row in fs.rows],
                                 self.profile.speeds)
            records.write_metadata(
                self.out, testbed=self.ledger.name, topology_file=self.ledger.topology_file,
                incidents=self.incidents, topology=self.ledger.topology, kind=self.kind,
                fabric=self.ledger.extra.get("fabric", {}),  # its idle per-hop latency
                scheduler=self.opts.scheduler, seed=self.opts.seed,
                epoch0_s=self.epoch0,  # wall time of t=0 (timeline.csv times count from it)
                options={k: str(v) for k, v in self.opts.__dict__.items()},
                **self.metadata(), spin_per_s=self.profile.spin_per_s,
                node_speeds_gops=self.profile.speeds,
                host_speed=hostspeed.summary(self.sampler.probe, self.sampler.host))
        return table

    def _collectors(self) -> list:
        return [c for node in self.ledger.topology["nodes"]
                if (c := nodes.of_node(self.ledger, node).collector(
                    self.ledger, node, self.opts.sample_s))]

