"""Playing a timeline during a run: each action is applied at its planned offset from the
run's start on the monotonic clock (never "after the previous one", so nothing drifts),
through the same live operations as `testbed link set/down/up` and `node stop/start`, and
recorded with its planned and applied times and what the kernel holds afterwards.

The decision loop asks `changes()` between polls: the network view is rebuilt from the
testbed's state (the one place that knows the current rates, down links and stopped nodes)
and the scheduler decides again, so running flows are re-planned around the change."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pandas as pd

from testbed import dynamics
from testbed.errors import TestbedError
from testbed.net.ledger import Ledger
from testbed.net.probe import probe
from testbed.schedulers.network import NetworkView, link_key
from testbed.topology.loader import read_file, read_yaml
from testbed.topology.model import Topology
from testbed.topology.timeline import Action, expand, parse


def load_actions(ledger: Ledger, topology: Topology, timeline_file: Path | None,
                 horizon_s: float | None, seed: int | None) -> list[Action]:
    """The run's actions: from `--timeline FILE` (a file with `timeline:` or `seed`/`events`
    at its top), else from the topology file's `timeline:` section; [] if neither has one."""
    path = timeline_file or (Path(ledger.topology_file) if ledger.topology_file else None)
    if path is None or not path.exists():
        return []
    raw = read_yaml(read_file(path), str(path))
    if isinstance(raw, dict) and "timeline" in raw:
        raw = raw["timeline"]
    elif timeline_file is None:
        return []
    spec = parse(raw, str(path))
    return expand(spec, topology, str(path), path.parent, horizon_s, probe().netem, seed)


class Player:
    """Applies actions on a thread of its own; `changes()` tells the loop what happened."""

    def __init__(self, ledger: Ledger, actions: list[Action], t0: float) -> None:
        self.ledger, self.actions, self.t0 = ledger, actions, t0
        self.rows: list[dict] = []
        self._pending: list[Action] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._before: dict[tuple, dict] = {}  # (event, link, direction) -> values a set replaced
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)

    def start(self) -> Player:
        """Remember how the network is, then play."""
        if self.actions:
            now = Ledger.load(self.ledger.name)
            touched = {a.target for a in self.actions if a.what == "set"}
            self._start = {
                "stopped": list(now.extra.get("stopped", {})),
                "links_down": list(now.extra.get("links_down", [])),
                "shapes": {(e.index, e.src): dynamics.shape_now(now, e)
                           for t in touched for e in dynamics.ends(now, *t)}}
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop playing and put back what the timeline changed (links up, nodes started,
        rates as they were), so the testbed is left as the run found it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        if self.rows:
            self._restore()

    def _restore(self) -> None:
        name = self.ledger.name
        now = Ledger.load(name)
        t = round(time.monotonic() - self.t0, 6)
        done = []
        try:
            for node in set(now.extra.get("stopped", {})) - set(self._start["stopped"]):
                dynamics.start_node(name, node)
                done.append(f"start {node}")
            for i in set(now.extra.get("links_down", [])) - set(self._start["links_down"]):
                dynamics.set_link_state(name, *now.topology["links"][i]["between"], up=True)
                done.append("up " + "-".join(now.topology["links"][i]["between"]))
            for key, shape in self._start["shapes"].items():
                i, src = key
                lk = now.topology["links"][i]["between"]
                if dynamics.shape_now(Ledger.load(name), dynamics.LinkEnd(i, src, "", "")) \
                        != shape:
                    dst = lk[1] if lk[0] == src else lk[0]
                    dynamics.set_link(name, src, dst, bw=shape.bw_mbit, delay=shape.delay_ms,
                                      jitter=shape.jitter_ms, loss=shape.loss_pct,
                                      direction="forward")
                    done.append(f"rate {src}->{dst}")
            error = ""
        except TestbedError as e:
            error = str(e)
        self.rows.append({"planned_s": None, "applied_s": t, "late_ms": None, "event": None,
                          "what": "restore", "target": "", "direction": "",
                          "params": json.dumps(done), "held": "", "error": error,
                          "done_s": round(time.monotonic() - self.t0, 6)})

    def changes(self) -> list[Action]:
        with self._lock:
            out, self._pending = self._pending, []
        return out

    def _run(self) -> None:
        for a in self.actions:
            wait = self.t0 + a.t_s - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                return
            applied = time.monotonic() - self.t0
            row = {"planned_s": round(a.t_s, 6), "applied_s": round(applied, 6),
                   "late_ms": round((applied - a.t_s) * 1000, 3), "event": a.event,
                   "what": a.what, "target": "-".join(a.target), "direction": a.direction,
                   "params": json.dumps(a.params), "held": "", "error": ""}
            try:
                row["held"] = json.dumps(self._apply(a))
            except TestbedError as e:  # recorded; the run goes on
                row["error"] = str(e)
            row["done_s"] = round(time.monotonic() - self.t0, 6)
            self.rows.append(row)
            with self._lock:
                self._pending.append(a)

    def _apply(self, a: Action) -> object:
        name = self.ledger.name
        if a.what in ("set", "revert"):
            key = (a.event, a.target, a.direction)
            if a.what == "set":
                now = {e.src: dynamics.shape_now(Ledger.load(name), e)
                       for e in dynamics.ends(Ledger.load(name), *a.target, a.direction)}
                self._before.setdefault(key, {s: v for s, v in now.items()})
                values = a.params
            else:
                before = self._before.pop(key, {})
                held = []
                for src, shape in before.items():
                    dst = next(x for x in a.target if x != src)
                    held += dynamics.set_link(name, src, dst, bw=shape.bw_mbit,
                                              delay=shape.delay_ms, jitter=shape.jitter_ms,
                                              loss=shape.loss_pct, direction="forward")
                return held
            return dynamics.set_link(name, *a.target, bw=values.get("bw"),
                                     delay=values.get("delay"), jitter=values.get("jitter"),
                                     loss=values.get("loss"), direction=a.direction)
        if a.what in ("down", "up"):
            dynamics.set_link_state(name, *a.target, up=a.what == "up")
            return a.what
        if a.what == "stop":
            return dynamics.stop_node(name, a.target[0])
        return dynamics.start_node(name, a.target[0])

    def write(self, out: Path) -> None:
        if self.rows:
            pd.DataFrame(self.rows).to_csv(out / "timeline.csv", index=False)


def current_view(ledger_name: str, base: NetworkView, speeds: dict[str, float],
                 gops_per_core: float) -> NetworkView:
    """The network as it is now, for the scheduler: recorded rates, without down links and
    stopped nodes (nodes left out of placement at the start stay out)."""
    ledger = Ledger.load(ledger_name)
    topo = Topology.from_dict(ledger.topology, ledger.topology_file)
    view = NetworkView.from_topology(topo, speeds=speeds, gops_per_core=gops_per_core,
                                     k_paths=base.k_paths)
    down = {link_key(*ledger.topology["links"][i]["between"])
            for i in ledger.extra.get("links_down", [])}
    stopped = set(ledger.extra.get("stopped", {}))
    for entry in ledger.extra.get("stopped", {}).values():
        down |= {link_key(*ledger.topology["links"][i]["between"]) for i in entry["links"]}
    nodes = {n: v for n, v in view.nodes.items() if n in base.nodes and n not in stopped}
    links = {k: bw for k, bw in view.links.items() if k not in down}
    return NetworkView(nodes, links, view.k_paths, view.order)
