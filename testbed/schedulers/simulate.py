"""Event-driven simulation of an online scheduler without the network: jobs arrive, the
scheduler decides at every arrival and completion, jobs run for their duration and release
their resources. For fast sweeps, and as the reference the emulated runs are compared with.

A job's waiting time runs from its arrival until a decision places it, and includes the
scheduler's own (measured) decision time. Its throughput is time-averaged over its run,
because OTFA and TP change running jobs' rates when other jobs come and go.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from testbed.schedulers.jobs import Job
from testbed.schedulers.network import NetworkView
from testbed.schedulers.online import Scheduler
from testbed.schedulers.plan import Plan


@dataclass(frozen=True)
class JobResult:
    job: str
    arrival_s: float
    scheduled_s: float | None  # None: never placed
    finished_s: float | None
    waiting_s: float
    throughput: float  # items per second, time-averaged over the run


@dataclass(frozen=True)
class SimResult:
    scheduler: str
    jobs: tuple[JobResult, ...]
    decisions: int
    decision_s_max: float
    decision_s_total: float

    @property
    def mean_throughput(self) -> float:
        return sum(j.throughput for j in self.jobs) / max(len(self.jobs), 1)

    @property
    def mean_waiting_s(self) -> float:
        placed = [j.waiting_s for j in self.jobs if j.scheduled_s is not None]
        return sum(placed) / max(len(placed), 1)

    @property
    def unplaced(self) -> int:
        return sum(1 for j in self.jobs if j.scheduled_s is None)


def simulate(view: NetworkView, jobs: Sequence[Job], scheduler: Scheduler, name: str = "",
             count_decision_time: bool = True) -> SimResult:
    events: list[tuple[float, int, str, str]] = []  # (time, order, kind, job)
    for i, j in enumerate(jobs):
        heapq.heappush(events, (j.arrival_s, i, "arrive", j.name))
    by_name = {j.name: j for j in jobs}
    plan, waiting = Plan(name), []
    scheduled: dict[str, float] = {}
    finished: dict[str, float] = {}
    segments: dict[str, list[tuple[float, float]]] = {}  # job -> [(since, throughput)]
    decisions, d_max, d_total, order = 0, 0.0, 0.0, len(jobs)
    while events:
        now = events[0][0]
        done: set[str] = set()
        while events and events[0][0] <= now + 1e-12:
            _, _, kind, job = heapq.heappop(events)
            if kind == "arrive":
                waiting.append(by_name[job])
            else:
                done.add(job)
                finished[job] = now
        if done:
            plan = plan.without(done)
        if not waiting and not done:
            continue
        t0 = time.perf_counter()
        plan = scheduler(view, plan, waiting, now)
        took = time.perf_counter() - t0
        decisions, d_max, d_total = decisions + 1, max(d_max, took), d_total + took
        at = now + (took if count_decision_time else 0.0)
        placed = [j for j in waiting if j.name not in plan.waiting]
        waiting = [j for j in waiting if j.name in plan.waiting]
        for j in placed:
            scheduled[j.name] = at
            order += 1
            heapq.heappush(events, (at + j.duration_s, order, "finish", j.name))
        for jname, pred in plan.predicted.items():
            seg = segments.setdefault(jname, [])
            if not seg or abs(seg[-1][1] - pred.throughput) > 1e-12:
                seg.append((scheduled[jname] if not seg else at, pred.throughput))
        plan = replace(plan, waiting=())
    results = []
    for j in jobs:
        start, end = scheduled.get(j.name), finished.get(j.name)
        thr = time_average(segments.get(j.name, []), start, end) if start is not None else 0.0
        results.append(JobResult(j.name, j.arrival_s, start, end,
                                 (start - j.arrival_s) if start is not None else 0.0, thr))
    return SimResult(name, tuple(results), decisions, d_max, d_total)


def time_average(segs: list[tuple[float, float]], start: float, end: float | None) -> float:
    """Mean of a step function given as [(since, value)], over [start, end]."""
    if not segs:
        return 0.0
    end = end if end is not None else segs[-1][0]
    if end <= start:
        return segs[-1][1]
    total = 0.0
    for (t, v), nxt in zip(segs, [s[0] for s in segs[1:]] + [end], strict=False):
        total += v * max(0.0, min(nxt, end) - max(t, start))
    return total / (end - start)
