"""Timelines: what changes in the network during a run, declared in a topology's `timeline:`
section or a file of its own, expanded into primitive actions at absolute times.

Every event is planned against the start of the run (`at`, or `every` between `from` and
`until`); `for` adds the action that undoes it. Random events draw from one generator seeded
by the timeline's `seed` (a campaign passes the trial's seed). Expansion is pure; the checks
against the topology (unknown nodes and links, netem without netem, two actions that contradict
each other on one target at one time) fail before anything starts, naming the event."""

from __future__ import annotations

import csv
import fnmatch
import random
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field, model_validator

from testbed.errors import TopologyError
from testbed.topology.model import Topology
from testbed.topology.schema import Number, Percent, Rate, Seconds, Strict, Time

MAX_ACTIONS = 100_000
# actions that change what a workload does, not the network: the run's workload kind takes
# them before the clock starts and plays them itself (a kind that cannot refuses the run)
WORKLOAD_EVENTS = ("pedestrians",)


class LinkChange(Strict):
    bw: Rate | None = None
    delay: Time | None = None
    jitter: Time | None = None
    loss: Percent | None = None


class Flap(Strict):
    down_for: Seconds = Field(gt=0)


class Trace(Strict):
    csv: str | None = Field(None, description="columns t_s,bw_mbit[,delay_ms,loss_pct]")
    mahimahi: str | None = Field(
        None, description="Mahimahi trace: one line per 1500-byte delivery opportunity (ms)")
    window: Seconds = Field(1.0, gt=0, description="averaging window for a Mahimahi trace")
    loop: bool = False

    @model_validator(mode="after")
    def one_source(self) -> Trace:
        if (self.csv is None) == (self.mahimahi is None):
            raise ValueError("give exactly one of csv: or mahimahi:")
        return self


class RandomCrashes(Strict):
    start: Seconds = Field(0.0, alias="from")
    until: Seconds
    rate_per_min: Number = Field(gt=0, le=600)
    nodes: str = Field("*", description="a glob over node names")
    crash: bool = True
    duration: tuple[Seconds, Seconds] = Field(alias="for")


class Event(Strict):
    at: Seconds | None = None
    every: Seconds | None = Field(None, gt=0)
    start: Seconds | None = Field(None, alias="from")
    until: Seconds | None = None
    duration: Seconds | None = Field(None, alias="for", gt=0)
    link: tuple[str, str] | None = None
    direction: str = Field("both", alias="dir", pattern="^(both|forward|reverse)$")
    node: str | None = None
    partition: list[list[str]] | None = None
    set: LinkChange | None = None
    down: bool = False
    crash: bool = False
    lose: bool = False
    flap: Flap | None = None
    trace: Trace | None = None
    random: RandomCrashes | None = None
    pedestrians: int | None = Field(None, ge=0, le=100_000, description=(
        "people in view of the camera node from then on, counted from the cameras' first "
        "frame like a trace file's t_s (a video workload's streams from it follow)"))


class TimelineSpec(Strict):
    seed: int = Field(0, ge=0, le=2**31)
    events: list[Event] = Field([], max_length=10_000)


@dataclass(frozen=True, order=True)
class Action:
    """One change at one time: `what` is set/down/up/stop/start on a link or node."""

    t_s: float
    order: int  # ties keep the file's order
    what: str = field(compare=False)
    target: tuple[str, ...] = field(compare=False)
    params: dict = field(compare=False, default_factory=dict)
    event: int = field(compare=False, default=0)
    direction: str = field(compare=False, default="both")


def parse(raw: object, source: str) -> TimelineSpec:
    from testbed.topology.loader import parse_model

    return parse_model(TimelineSpec, raw, source)


def expand(spec: TimelineSpec, topo: Topology, source: str, base: Path,
           horizon_s: float | None = None, netem_ok: bool = True,
           seed: int | None = None) -> list[Action]:
    """The timeline as actions sorted by time, checked against the topology; `seed`
    overrides the file's (a campaign's trial seed). Repetitions and looping traces need
    `until:`; `horizon_s` drops actions planned after it (the run's end)."""
    rng = random.Random(spec.seed if seed is None else seed)
    out: list[Action] = []
    for i, ev in enumerate(spec.events):
        where = f"timeline.events[{i}]"
        out += _event(ev, i, where, topo, source, base, horizon_s, netem_ok, rng)
        if len(out) > MAX_ACTIONS:
            raise TopologyError(source, where, f"the timeline expands to more than "
                                f"{MAX_ACTIONS:,} actions", "use a longer period or window")
    out.sort()
    _check_contradictions(out, spec, source)
    return [a for a in out if horizon_s is None or a.t_s <= horizon_s]


def _event(ev: Event, i: int, where: str, topo: Topology, source: str, base: Path,
           horizon: float | None, netem_ok: bool, rng: random.Random) -> list[Action]:
    names = {n.name for n in topo.nodes}
    if ev.random is not None:
        return _random(ev.random, i, where, topo, source, rng)
    targets = sum(x is not None for x in (ev.link, ev.node, ev.partition))
    if targets != 1:
        raise TopologyError(source, where, "names no target or several",
                            "give exactly one of link: [A, B], node: N or partition: [[..], [..]]")
    if ev.link is not None:
        a, b = ev.link
        if topo.link_between(a, b) is None:
            raise TopologyError(source, f"{where}.link", f"there is no link {a}-{b}",
                                "name two nodes joined by a link in the topology")
    if ev.node is not None and ev.node not in names:
        raise TopologyError(source, f"{where}.node", f"unknown node {ev.node!r}",
                            f"use one of {', '.join(sorted(names)[:20])}")
    kinds = [k for k, on in (("set", ev.set is not None), ("down", ev.down),
                             ("crash", ev.crash), ("lose", ev.lose),
                             ("flap", ev.flap is not None), ("trace", ev.trace is not None),
                             ("pedestrians", ev.pedestrians is not None))
             if on]
    if ev.partition is not None and not kinds:
        kinds = ["down"]  # a partition is its links going down
    if len(kinds) != 1:
        raise TopologyError(source, where, f"says {' and '.join(kinds) or 'nothing'}",
                            "give exactly one of set:, down:, crash:, lose:, flap:, trace:, "
                            "pedestrians:")
    kind = kinds[0]
    if kind == "pedestrians" and ev.node is None:
        raise TopologyError(source, where, "pedestrians is for a camera node",
                            "write node: CAMERA")
    if kind == "pedestrians" and ev.duration:
        raise TopologyError(source, f"{where}.for", "a pedestrian count holds until the next "
                            "one", "drop for: and add an event with the later count")
    if kind in ("crash", "lose") and ev.node is None:
        raise TopologyError(source, where, f"{kind} is for a node", "write node: NAME")
    if kind in ("set", "flap", "trace") and ev.link is None:
        raise TopologyError(source, where, f"{kind} is for a link", "write link: [A, B]")
    if kind == "down" and ev.link is None and ev.partition is None:
        raise TopologyError(source, where, "down is for a link or a partition",
                            "write link: [A, B], or use crash: for a node")
    if ev.set is not None and (ev.set.delay or ev.set.jitter or ev.set.loss) and not netem_ok:
        raise TopologyError(source, f"{where}.set", "delay/jitter/loss need netem, which this "
                            "kernel lacks", "change bw only, or use a host with netem")
    times = _times(ev, where, source, horizon)
    out: list[Action] = []
    order = i * 1_000_000
    for t in times:
        if kind == "set":
            params = {k: v for k, v in ev.set.model_dump().items() if v is not None}
            out.append(Action(t, order, "set", ev.link, params, i, ev.direction))
            if ev.duration:
                out.append(Action(t + ev.duration, order + 1, "revert", ev.link,
                                  {k: None for k in params}, i, ev.direction))
        elif kind == "down" and ev.partition is not None:
            cut = _partition_links(ev.partition, topo, where, source)
            out += [Action(t, order, "down", lk, {}, i) for lk in cut]
            if ev.duration:
                out += [Action(t + ev.duration, order + 1, "up", lk, {}, i) for lk in cut]
        elif kind == "down":
            out.append(Action(t, order, "down", ev.link, {}, i))
            if ev.duration:
                out.append(Action(t + ev.duration, order + 1, "up", ev.link, {}, i))
        elif kind == "flap":
            out.append(Action(t, order, "down", ev.link, {}, i))
            out.append(Action(t + ev.flap.down_for, order + 1, "up", ev.link, {}, i))
        elif kind in ("crash", "lose"):
            out.append(Action(t, order, "stop", (ev.node,), {"how": kind}, i))
            if ev.duration:
                out.append(Action(t + ev.duration, order + 1, "start", (ev.node,), {}, i))
        elif kind == "trace":
            out += _trace(ev, i, where, source, base, t, horizon)
        elif kind == "pedestrians":  # the workload's, not the network's: see WORKLOAD_EVENTS
            out.append(Action(t, order, "pedestrians", (ev.node,), {"count": ev.pedestrians}, i))
        order += 2
    return out


def _times(ev: Event, where: str, source: str, horizon: float | None) -> list[float]:
    if ev.every is None:
        start = ev.at if ev.at is not None else (ev.start or 0.0)
        return [start]
    if ev.at is not None:
        raise TopologyError(source, where, "has both at: and every:",
                            "use at: once, or every: with from:/until:")
    end = ev.until
    if end is None:  # explicit: a run's length is not the timeline's business
        raise TopologyError(source, where, "repeats every "
                            f"{ev.every:g} s with no end", "add until:")
    start = ev.start or 0.0
    count = int((end - start) // ev.every) + 1
    if count > MAX_ACTIONS:
        raise TopologyError(source, where, f"repeats {count:,} times", "use a longer every:")
    return [start + k * ev.every for k in range(count) if start + k * ev.every < end]


def _partition_links(groups: list[list[str]], topo: Topology, where: str,
                     source: str) -> list[tuple[str, str]]:
    names = {n.name for n in topo.nodes}
    side: dict[str, int] = {}
    for g, members in enumerate(groups):
        for n in members:
            if n not in names:
                raise TopologyError(source, f"{where}.partition", f"unknown node {n!r}",
                                    "list nodes of the topology")
            if n in side:
                raise TopologyError(source, f"{where}.partition", f"{n} is in two groups",
                                    "put each node in one group")
            side[n] = g
    cut = [(lk.a, lk.b) for lk in topo.links
           if lk.a in side and lk.b in side and side[lk.a] != side[lk.b]]
    if not cut:
        raise TopologyError(source, f"{where}.partition", "no link joins the groups",
                            "name groups that a link joins")
    return cut


def read_trace(trace: Trace, base: Path, source: str, where: str) -> list[tuple[float, dict]]:
    """(t_s, changes) rows of a trace file: CSV t_s,bw_mbit[,delay_ms,loss_pct], or a
    Mahimahi trace turned into the mean rate of each window."""
    path = Path(trace.csv or trace.mahimahi)
    path = path if path.is_absolute() else base / path
    try:
        text = path.read_text()
    except OSError as e:
        raise TopologyError(source, f"{where}.trace", f"cannot read {path} ({e.strerror})",
                            "give a path relative to the topology file") from None
    try:
        return _csv_rows(text) if trace.csv else mahimahi_rates(text, trace.window)
    except (ValueError, KeyError) as e:
        raise TopologyError(source, f"{where}.trace", f"{path}: {e}",
                            "see the trace formats in the README") from None


def _csv_rows(text: str) -> list[tuple[float, dict]]:
    rows = []
    for r in csv.DictReader(text.splitlines()):
        change = {"bw": float(r["bw_mbit"])}
        if r.get("delay_ms"):
            change["delay"] = float(r["delay_ms"])
        if r.get("loss_pct"):
            change["loss"] = float(r["loss_pct"])
        rows.append((float(r["t_s"]), change))
    if not rows:
        raise ValueError("no rows (columns: t_s,bw_mbit[,delay_ms,loss_pct])")
    if any(b[0] <= a[0] for a, b in zip(rows, rows[1:], strict=False)):
        raise ValueError("t_s must increase")
    if any(c["bw"] <= 0 for _, c in rows):
        raise ValueError("bw_mbit must be positive")
    return rows


def mahimahi_rates(text: str, window_s: float = 1.0) -> list[tuple[float, dict]]:
    """Mahimahi: each line is a millisecond at which one 1,500-byte packet may be delivered
    (repeated lines are several packets). Each window's rate is its opportunities x 1,500 x 8
    bits over the window; a window with none gets 1% of the trace's mean (a link is never set
    to zero: HTB needs a positive rate)."""
    stamps = [int(x) for x in text.split()]
    if not stamps:
        raise ValueError("no delivery opportunities")
    end = stamps[-1]
    windows = int(end / 1000 // window_s) + 1
    counts = [0] * windows
    for ms in stamps:
        counts[min(int(ms / 1000 // window_s), windows - 1)] += 1
    rates = [c * 1500 * 8 / window_s / 1e6 for c in counts]
    floor = max(sum(rates) / len(rates) * 0.01, 0.01)
    return [(k * window_s, {"bw": max(r, floor)}) for k, r in enumerate(rates)]


def _trace(ev: Event, i: int, where: str, source: str, base: Path, start: float,
           horizon: float | None) -> list[Action]:
    rows = read_trace(ev.trace, base, source, where)
    length = rows[-1][0] + (rows[-1][0] - rows[-2][0] if len(rows) > 1 else 1.0)
    end = ev.until
    if ev.trace.loop and end is None:
        raise TopologyError(source, where, "loops a trace with no end", "add until:")
    out, k, order = [], 0, i * 1_000_000
    while True:
        for t, change in rows:
            at = start + k * length + t
            if end is not None and at >= end:
                return out
            out.append(Action(at, order, "set", ev.link, change, i, ev.direction))
            order += 1
        k += 1
        if not ev.trace.loop:
            return out


def _random(r: RandomCrashes, i: int, where: str, topo: Topology, source: str,
            rng: random.Random) -> list[Action]:
    pool = [n.name for n in topo.nodes if fnmatch.fnmatch(n.name, r.nodes)]
    if not pool:
        raise TopologyError(source, f"{where}.random.nodes", f"{r.nodes!r} matches no node",
                            "use a glob such as e*")
    lo, hi = r.duration
    if hi < lo:
        raise TopologyError(source, f"{where}.random.for", "the range is reversed",
                            "write [shortest, longest]")
    out, t, order = [], r.start, i * 1_000_000
    busy: dict[str, float] = {}
    while True:
        t += rng.expovariate(r.rate_per_min / 60)
        if t >= r.until:
            return out
        node = rng.choice(pool)
        length = rng.uniform(lo, hi)
        if busy.get(node, -1.0) > t:  # already down then: this draw is skipped
            continue
        busy[node] = t + length
        out.append(Action(t, order, "stop", (node,), {"how": "crash"}, i))
        out.append(Action(t + length, order + 1, "start", (node,), {}, i))
        order += 2


def _check_contradictions(actions: list[Action], spec: TimelineSpec, source: str) -> None:
    """Refuse a target given two different states at one instant, a node stopped twice
    before it starts, or a start/up of something that is not down."""
    seen: dict[tuple, Action] = {}
    for a in actions:
        family = "rate" if a.what in ("set", "revert") else \
            "workload" if a.what in WORKLOAD_EVENTS else "state"
        key = (round(a.t_s, 6), family, a.target, a.direction)
        other = seen.get(key)
        if other is not None and other.event != a.event and (other.what, other.params) != (
                a.what, a.params):
            raise TopologyError(source, f"timeline.events[{a.event}]",
                                f"contradicts events[{other.event}] on "
                                f"{'-'.join(a.target)} at {a.t_s:g} s",
                                "move one of them in time")
        seen[key] = a
    stopped: dict[str, int] = {}
    for a in actions:
        node = a.target[0]
        if a.what == "stop":
            if node in stopped:
                raise TopologyError(source, f"timeline.events[{a.event}]",
                                    f"stops {node} at {a.t_s:g} s while events[{stopped[node]}] "
                                    "has it stopped", "let it start again first")
            stopped[node] = a.event
        elif a.what == "start":
            stopped.pop(node, None)
