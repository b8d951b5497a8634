"""The requests kind's run on a testbed: every edge runs the service (its replicas as worker
processes) and a client that holds the requests arriving there; each period the runner (the
central controller of CoRaiS's fig. 2) builds the period's problem from the edges' reports,
asks the policy, and orders each client to send its requests, with their bytes, to the
chosen edges over the emulated links; answers come back on the same connections.

The units of the shared decision loop are the periods: period p arrives at p x period and
ends when all its requests are answered (or failed). What the policy sees is measured:
each edge's time-vs-size line is fitted from the service's own timings inside the node, and
its backlog (eqs. 1-3) is computed from the service's and clients' reports at decision time:
work not started counts whole, work in progress what is left of it, data still on the way
what is left of its transfer. Moving data is priced by the shortest path's bottleneck rate
(the controller's default routes are those paths).
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from testbed.errors import NetworkError
from testbed.experiment.enforce import FlowSet
from testbed.experiment.loop import Experiment
from testbed.kinds.requests.decision import PeriodDecision, to_plan
from testbed.kinds.requests.policies import policy
from testbed.kinds.requests.spec import (
    MB,
    EdgeModel,
    Request,
    Workload,
    arrivals,
    instance,
    transfer_s_per_mb,
)
from testbed.schedulers.plan import Plan
from testbed.units import parse_size_bytes

SERVICE_PORT = 7100
READY_TIMEOUT_S = 180.0
REQUEST_TIMEOUT_S = 120.0  # a request unanswered this long after its order is failed


@dataclass
class Period:
    name: str
    index: int
    arrival_s: float
    requests: list[Request]
    status: str = "waiting"
    reason: str = ""
    decision: PeriodDecision | None = None
    decision_s: float = 0.0
    ordered_s: float = 0.0


@dataclass
class Tracked:
    """One request's life as the runner saw it (times on the runner's clock)."""

    req: Request
    rid: int
    edge: int = -1
    ordered: float = float("nan")
    connected: float = float("nan")
    sent: float = float("nan")
    recv: float = float("nan")
    start: float = float("nan")
    end: float = float("nan")
    done: float = float("nan")
    failed: str = ""
    predicted_s: float = float("nan")
    variant: int = -1  # index into the service's variants (-1: none chosen)

    @property
    def finished(self) -> bool:
        return not np.isnan(self.done) or bool(self.failed)


@dataclass
class Talker:
    """A process on a node that takes orders on stdin and reports events on stdout."""

    node: str
    label: str
    proc: subprocess.Popen
    events: list[dict] = field(default_factory=list)


class Requests(Experiment):
    kind = "requests"
    program = "request_service.py"

    def __init__(self, ledger, units: list, opts, progress=lambda s: None) -> None:
        self.w: Workload = units[0]
        spec = self.w.spec
        periods = [Period(f"period-{p:04d}", p, p * spec.period, reqs)
                   for p, reqs in enumerate(arrivals(self.w, opts.duration_s))]
        super().__init__(ledger, periods, opts, progress)
        self.policy, self.policy_arg = policy(opts.scheduler)
        self.periods = {p.name: p for p in periods}
        self.tracked: dict[int, Tracked] = {}
        by_name = {r.name: k for k, r in enumerate(r for p in periods for r in p.requests)}
        for p in periods:
            for r in p.requests:
                self.tracked[by_name[r.name]] = Tracked(r, by_name[r.name])
        self.rid_of = by_name
        self.events: queue.Queue = queue.Queue()
        self.services: dict[str, Talker] = {}
        self.clients: dict[str, Talker] = {}
        self.model: EdgeModel | None = None
        self.profile_rows: list[dict] = []
        self.ips = {n: v["ip"] for n, v in ledger.topology["nodes"].items()}
        self.rng = np.random.default_rng(opts.seed if opts.seed is not None
                                         else spec.arrivals.seed)

    # ---- processes --------------------------------------------------------------------------
    def _talker(self, node: str, label: str, config: dict) -> Talker:
        proc = self.processes.spawn(node, label, config, talk=True)
        t = Talker(node, label, proc)
        offset = getattr(self.processes.files.get(node), "offset", None)  # a board's clock
        shift_s = offset.offset_s if offset is not None else 0.0

        def read() -> None:
            for line in proc.stdout:
                with contextlib.suppress(json.JSONDecodeError, KeyError, TypeError):
                    ev = json.loads(line)  # stamped on the node's clock when it happened
                    wall0 = time.time() - (time.monotonic() - self.t0)
                    self.events.put((ev["at"] / 1e9 - shift_s - wall0, t, ev))
            self.events.put((time.monotonic() - self.t0, t, {"event": "exit"}))

        threading.Thread(target=read, daemon=True).start()
        return t

    def _wait_for(self, talkers: list[Talker], event: str) -> None:
        need = {t.label for t in talkers}
        deadline = time.monotonic() + READY_TIMEOUT_S
        while need:
            try:
                _, t, ev = self.events.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise NetworkError(f"no {event!r} from {', '.join(sorted(need))} within "
                                   f"{READY_TIMEOUT_S:.0f} s; see logs/ in the run") from None
            t.events.append(ev)
            if ev["event"] == "exit":
                raise NetworkError(f"{t.label} on {t.node} exited at start: "
                                   f"{self.processes.last_log_line(t.label)}")
            if ev["event"] == event:
                need.discard(t.label)

    def prepare(self) -> None:
        svc = self.w.spec.service
        lo, hi = (b / MB for b in self.w.spec.size.bytes)
        base = {"gops_per_core": self.opts.gops_per_core,
                "spin_per_s": self.profile.spin_per_s, "compute": self.opts.compute,
                "work_per_mb": svc.work.per_mb, "work_base": svc.work.base,
                "model": svc.model, "resolution": self.opts.resolution,
                "image_bytes": parse_size_bytes(svc.image)}
        try:
            self.progress("starting the service on every edge and timing it there")
            for e, n in zip(self.w.edges, self.w.replicas, strict=True):
                self.services[e] = self._talker(e, f"service.{e}", {
                    **base, "role": "service", "port": SERVICE_PORT, "replicas": n,
                    "profile_mb": [lo, (lo + hi) / 2, hi]})
            self._wait_for(list(self.services.values()), "ready")
            self.model = self._fit()
            for e in self.w.edges:
                self.clients[e] = self._talker(e, f"client.{e}", {
                    "role": "client", "max_bytes": self.w.spec.size.bytes[1]})
            self._wait_for(list(self.clients.values()), "ready")
            first = next(iter(self.periods.values()))  # load the policy (e.g. torch) now,
            self.policy(instance(self.w, self.model, first.requests, *self._backlog(0.0)),
                        np.random.default_rng(0), self.policy_arg)  # not at period 0
        except BaseException:
            self.close()
            raise

    def _fit(self) -> EdgeModel:
        """Each edge's line of seconds per request (one replica, all replicas busy) against
        MB, fitted on the service's own timings (numpy.polyfit, as CoRaiS suggests)."""
        slope, icpt = [], []
        for e in self.w.edges:
            samples = next(ev["samples"] for ev in self.services[e].events
                           if ev["event"] == "profile")
            x, y = np.array(samples).T
            a, b = np.polyfit(x, y, 1) if len(set(x)) > 1 else (0.0, float(np.mean(y)))
            slope.append(max(a, 0.0))
            icpt.append(max(b, 0.0))
            self.profile_rows += [{"edge": e, "size_mb": s, "seconds": t} for s, t in samples]
        return EdgeModel(np.array(slope), np.array(icpt), np.array(self.w.replicas, float),
                         transfer_s_per_mb(self.profile.view, self.w.edges))

    def close(self) -> None:
        for t in [*self.clients.values(), *self.services.values()]:
            with contextlib.suppress(OSError):
                if t.proc.stdin:
                    t.proc.stdin.close()
        self.processes.stop([t.proc for t in [*self.clients.values(),
                                              *self.services.values()]])

    # ---- the decision loop's hooks -------------------------------------------------------
    def _backlog(self, now: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """W_loc, W_trans, W_in (eqs. 1-3) of every edge from what the reports say now."""
        m, q = self.model, len(self.w.edges)
        w_loc, w_trans, w_in = np.zeros(q), np.zeros(q), np.zeros(q)
        for t in self.tracked.values():
            if t.edge < 0 or t.finished or not np.isnan(t.end):
                continue
            e, mb = t.edge, t.req.size_bytes / MB
            left = (m.slope_s_per_mb[e] * mb + m.intercept_s[e]) * self._work(t)
            if not np.isnan(t.start):
                left = max(0.0, left - (now - t.start))
            if t.req.source == e:
                w_loc[e] += left / m.replicas[e]
            else:
                w_in[e] += left / m.replicas[e]
                if np.isnan(t.recv):
                    moving = mb * m.transfer_s_per_mb[t.req.source, e] - (now - t.ordered)
                    w_trans[e] = max(w_trans[e], moving)
        return w_loc, w_trans, w_in

    def _work(self, t: Tracked) -> float:
        """The work of the request's service variant relative to the first one."""
        variants = self.w.spec.service.variants
        return variants[t.variant].work_factor if t.variant >= 0 and variants else 1.0

    def decide(self, waiting: list) -> list:
        self._drain()
        for p in waiting:
            now = self.now()
            inst = instance(self.w, self.model, p.requests, *self._backlog(now))
            t0 = time.perf_counter()
            d = self.policy(inst, self.rng, self.policy_arg)
            took = time.perf_counter() - t0
            plan = to_plan(self.opts.scheduler, self.w, self.profile.view, p.requests, inst,
                           d, took)
            n = len(list((self.out / "decisions").iterdir()))
            (self.out / "decisions" / f"{n:04d}.json").write_text(plan.to_json())
            p.decision, p.decision_s = plan.extension, took
            self._order(p, d.edge, d.variant)
            self.progress(f"t={now:.1f}s {self.opts.scheduler}: period {p.index}, "
                          f"{len(p.requests)} requests, predicted makespan "
                          f"{p.decision.makespan_predicted_s:.2f} s ({took * 1000:.0f} ms)")
        return []

    def _order(self, p: Period, edges: np.ndarray, variant: np.ndarray | None) -> None:
        svc = self.w.spec.service.work
        p.status, p.ordered_s = "running", self.now()
        for k, r in enumerate(p.requests):
            t = self.tracked[self.rid_of[r.name]]
            t.edge, t.ordered = int(edges[k]), p.ordered_s
            t.variant = int(variant[k]) if variant is not None else -1
            t.predicted_s = p.decision.request_time_predicted_s[r.name]
            dst = self.w.edges[t.edge]
            order = {"id": t.rid, "host": self.ips[dst], "port": SERVICE_PORT,
                     "bytes": r.size_bytes,
                     "gops": (svc.per_mb * r.size_bytes / MB + svc.base) * self._work(t)}
            client = self.clients[self.w.edges[r.source]]
            try:
                client.proc.stdin.write(json.dumps(order) + "\n")
                client.proc.stdin.flush()
            except OSError as e:
                t.failed = f"client on {client.node}: {e}"

    def start(self, placed: list, plan: Plan) -> None:  # orders are sent by `decide`
        pass

    def _drain(self) -> None:
        """Apply every report received so far to the requests' records."""
        fields = {"connected", "sent", "recv", "start", "end", "done"}
        while True:
            try:
                at, talker, ev = self.events.get_nowait()
            except queue.Empty:
                return
            kind = ev.get("event")
            if kind == "exit":
                self._lost(talker)
            elif kind in fields and ev.get("id") in self.tracked:
                setattr(self.tracked[ev["id"]], kind, at)
            elif kind == "failed" and ev.get("id") in self.tracked:
                self.tracked[ev["id"]].failed = ev.get("reason", "failed")

    def _lost(self, talker: Talker) -> None:
        why = f"{talker.label} on {talker.node} exited: " \
              f"{self.processes.last_log_line(talker.label)}"
        src = talker.label.startswith("client.")
        for t in self.tracked.values():
            if t.edge < 0 or t.finished:
                continue
            if (src and self.w.edges[t.req.source] == talker.node) or \
                    (not src and self.w.edges[t.edge] == talker.node):
                t.failed = why

    def poll(self) -> set[str]:
        self._drain()
        now, ended = self.now(), set()
        for p in self.periods.values():
            if p.status != "running":
                continue
            mine = [self.tracked[self.rid_of[r.name]] for r in p.requests]
            for t in mine:
                if not t.finished and now - t.ordered > REQUEST_TIMEOUT_S:
                    t.failed = f"no answer within {REQUEST_TIMEOUT_S:.0f} s"
            if all(t.finished for t in mine):
                bad = [t for t in mine if t.failed]
                p.status = "failed" if bad else "done"
                p.reason = f"{len(bad)} requests failed, e.g. {bad[0].failed}" if bad else ""
                ended.add(p.name)
        return ended

    def running(self) -> list[str]:
        return [p.name for p in self.periods.values() if p.status == "running"]

    def stop_unit(self, name: str, status: str, reason: str) -> None:
        p = self.periods[name]
        p.status, p.reason = status, reason
        for r in p.requests:
            t = self.tracked[self.rid_of[r.name]]
            if not t.finished:
                t.failed = reason

    def not_placed(self, units: list) -> None:
        for p in units:
            p.status, p.reason = "not placed", "the policy placed none of its requests"

    def flow_sets(self) -> list[FlowSet]:
        return []  # requests follow the controller's default routes

    # ---- results --------------------------------------------------------------------------
    def write(self) -> pd.DataFrame:
        rows, variants = [], self.w.spec.service.variants
        for t in self.tracked.values():
            rows.append({
                "request": t.req.name, "period": t.req.period,
                "source": self.w.edges[t.req.source],
                "edge": self.w.edges[t.edge] if t.edge >= 0 else "",
                "size_bytes": t.req.size_bytes,
                "variant": variants[t.variant].name if t.variant >= 0 and variants else "",
                "accuracy_pct": variants[t.variant if t.variant >= 0 else 0].accuracy
                if variants else float("nan"),
                "connect_s": t.connected - t.ordered,
                "transfer_s": t.recv - t.ordered if t.edge != t.req.source else 0.0,
                "wait_s": t.start - (t.recv if not np.isnan(t.recv) else t.ordered),
                "compute_s": t.end - t.start,
                "response_time_measured_s": t.done - t.ordered,
                "response_time_predicted_s": t.predicted_s,
                "status": "failed" if t.failed else ("done" if t.finished else "not run"),
                "reason": t.failed})
        req = pd.DataFrame(rows)
        req.to_csv(self.out / "requests.csv", index=False)
        prows = []
        for p in self.periods.values():
            mine = req[req.period == p.index]
            meas = mine.response_time_measured_s.max() if (mine.status == "done").all() \
                else float("nan")
            pred = mine.response_time_predicted_s.max()
            prows.append({
                "period": p.index, "policy": self.opts.scheduler, "requests": len(mine),
                "moved": int((mine.edge != mine.source).sum()),
                "makespan_measured_s": meas, "makespan_predicted_s": pred,
                "fidelity": meas / pred if pred > 0 else float("nan"),
                "objective_predicted_s": p.decision.makespan_predicted_s if p.decision
                else float("nan"),
                "decision_ms": p.decision_s * 1000, "status": p.status, "reason": p.reason})
        periods = pd.DataFrame(prows)
        periods.to_csv(self.out / "periods.csv", index=False)
        pd.DataFrame(self.profile_rows).to_csv(self.out / "service_profile.csv", index=False)
        return periods

    def metadata(self) -> dict[str, Any]:
        m = self.model
        return {"workload": {"file": self.w.source, "edges": list(self.w.edges),
                             "replicas": list(self.w.replicas),
                             "period_s": self.w.spec.period, "periods": len(self.periods),
                             "per_period": self.w.spec.arrivals.per_period},
                "edge_model": None if m is None else {
                    "slope_s_per_mb": dict(zip(self.w.edges, m.slope_s_per_mb.tolist(),
                                               strict=True)),
                    "intercept_s": dict(zip(self.w.edges, m.intercept_s.tolist(),
                                            strict=True))}}
