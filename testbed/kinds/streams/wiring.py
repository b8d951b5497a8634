"""From a job's Plan to processes and flows (pure): which task process runs where, on which
ports it listens and connects, and the per-flow paths and rates the network must enforce.

Every DAG edge that crosses the network is its own TCP connection with a unique source port,
so each planned flow has its own 5-tuple and gets its own path and rate, even when two flows
join the same pair of nodes. Co-located tasks talk over the node's loopback (free, as in the
model). The planned rate is a goodput; the tc class gets the line rate that yields it,
counting the headers each message costs.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from testbed.routing import FlowSpec
from testbed.schedulers.jobs import Job
from testbed.schedulers.plan import Flow, Plan

SOURCE = "source"


@dataclass(frozen=True)
class TaskProcess:
    job: str
    task: str  # "source" for the job's input generator
    node: str
    config: dict


@dataclass(frozen=True)
class JobWiring:
    processes: tuple[TaskProcess, ...]  # start order: sinks first, source last
    flows: tuple[tuple[Flow, FlowSpec], ...]


FRAMING_BYTES = 16  # dag_task.py's message header
SEGMENT_PAYLOAD = 1448  # TCP payload per full-size segment (1500 MTU, timestamps)
SEGMENT_OVERHEAD = 66  # Ethernet 14 + IP 20 + TCP with timestamps 32


def line_rate_mbit(goodput_mbit: float, volume_bytes: int) -> float:
    """The tc rate (which counts whole frames) that carries `goodput_mbit` of item data in
    messages of `volume_bytes`: framing and per-segment headers make small messages cost far
    more on the wire than their payload (a 10-byte item is a ~92-byte frame)."""
    message = volume_bytes + FRAMING_BYTES
    segments = -(-message // SEGMENT_PAYLOAD)
    return goodput_mbit * (message + segments * SEGMENT_OVERHEAD) / volume_bytes


def tc_rate_mbit(goodput_mbit: float, volume_bytes: int, path: tuple[str, ...],
                 line_bw: dict[frozenset, float | None]) -> float:
    """The rate of the flow's tc class: its line rate, never above the slowest link of its
    path (a flow planned to fill a link gets the whole link; a flow's rate must fit every
    link it crosses)."""
    rate = line_rate_mbit(goodput_mbit, volume_bytes)
    links = [line_bw.get(frozenset(hop)) for hop in zip(path, path[1:], strict=False)]
    known = [bw for bw in links if bw]
    return round(min(rate, *known) if known else rate, 6)


class Ports:
    """Hands out ports that are unique within a run; each run starts at a random offset so
    that connections of an earlier run still in TIME_WAIT never collide with a new one."""

    def __init__(self, offset: int | None = None) -> None:
        offset = random.randrange(0, 9000, 10) if offset is None else offset
        self._listen = itertools.count(20000 + offset)
        self._source = itertools.count(40000 + 2 * offset)

    def listen(self) -> int:
        return next(self._listen)

    def source(self) -> int:
        return next(self._source)


def wire(job: Job, plan: Plan, ips: dict[str, str], ports: Ports, options: dict) -> JobWiring:
    """`options`: compute, duration_s, window, rate_fps, gops_per_core, spin_per_s, trace_dir,
    `cores` (node -> CPU cores) for torch thread counts, `line_bw` ({a, b} -> Mbit/s)."""
    where = {p.task: p.node for p in plan.placements_of(job.name)}
    flows = {(f.src_task, f.dst_task): f for f in plan.flows_of(job.name)}
    listen = {t.name: ports.listen() for t in job.tasks}
    ack_port = ports.listen()
    successors: dict[str, list[tuple[str, int]]] = {t.name: [] for t in job.tasks}
    successors[SOURCE] = []
    for t in job.tasks:
        if not t.inputs:
            successors[SOURCE].append((t.name, job.input_bytes))
        for pred, volume in t.inputs:
            successors[pred].append((t.name, volume))
    sinks = [t.name for t in job.tasks if not successors[t.name]]
    node_of = {**where, SOURCE: job.source}

    def host(src_task: str, dst_node: str) -> str:
        return "127.0.0.1" if node_of[src_task] == dst_node else ips[dst_node]

    enforced: list[tuple[Flow, FlowSpec]] = []

    def outputs(src_task: str) -> list[dict]:
        outs = []
        for dst_task, volume in successors[src_task]:
            key = ("" if src_task == SOURCE else src_task, dst_task)
            o = {"to": dst_task, "host": host(src_task, where[dst_task]),
                 "port": listen[dst_task], "bytes": volume}
            if key in flows:
                f = flows[key]
                sport = ports.source()
                o["sport"] = sport
                f = Flow(**{**f.__dict__, "port": listen[dst_task]})
                rate = tc_rate_mbit(f.rate_mbit, f.volume_bytes, f.path,
                                    options.get("line_bw", {}))
                enforced.append((f, FlowSpec(src=f.src, dst=f.dst, path=f.path, proto="tcp",
                                             sport=sport, dport=listen[dst_task],
                                             rate_mbit=rate)))
            outs.append(o)
        return outs

    base = {"job": job.name, "compute": options.get("compute", "synthetic"),
            "resolution": options.get("resolution"),
            "gops_per_core": options["gops_per_core"], "spin_per_s": options["spin_per_s"]}
    procs = []
    for t in reversed(job.tasks):  # downstream first: they listen before upstream connects
        inputs = [{"from": p} for p, _ in t.inputs] or [{"from": SOURCE}]
        cfg = {**base, "role": "task", "task": t.name, "port": listen[t.name],
               "inputs": inputs, "outputs": outputs(t.name), "work_gops": t.work,
               "model": t.model, "cpu_cores": options.get("cores", {}).get(where[t.name]),
               "ack_port": ack_port, "source_host": host(t.name, job.source),
               "trace": f"{options['trace_dir']}/{job.name}.{t.name}.csv"}
        procs.append(TaskProcess(job.name, t.name, where[t.name], cfg))
    src_cfg = {**base, "role": SOURCE, "task": SOURCE, "outputs": outputs(SOURCE),
               "ack_port": ack_port, "sinks": len(sinks), "window": options.get("window")
               or len(job.tasks) + 1, "rate_fps": options.get("rate_fps"),
               "duration_s": options["duration_s"], "items": options.get("items"),
               "drain_s": options.get("drain_s", 10.0),
               "trace": f"{options['trace_dir']}/{job.name}.{SOURCE}.csv"}
    procs.append(TaskProcess(job.name, SOURCE, job.source, src_cfg))
    return JobWiring(tuple(procs), tuple(enforced))
