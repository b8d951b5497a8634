"""The Plan every scheduler returns: where each task runs, each data flow's path and rate, and
what the scheduler's model predicts. Plans serialize to JSON and back.

These parts are shared by every workload kind: a "job" is a kind's unit of work (a DAG job,
a training round, a batch of requests), placements put its parts on nodes, flows carry its
bytes. What only one kind decides (a training round's cut layers, a batch's dispatch) is the
Plan's `extension`: a dataclass registered for the kind with `register_extension`, kept
typed in memory and tagged with the kind in JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Placement:
    job: str
    task: str
    node: str
    work: float  # giga-operations per item
    memory_bytes: int
    after: tuple[str, ...] = ()  # the task's predecessors in the job's DAG


@dataclass(frozen=True)
class Flow:
    """Data of one DAG edge (or of the job's input) that crosses the network."""

    job: str
    src_task: str  # "" for the job's input coming from its source node
    dst_task: str
    src: str  # node
    dst: str  # node
    volume_bytes: int  # per item
    path: tuple[str, ...]
    rate_mbit: float
    port: int = 0  # destination port the runner uses for this flow (0: not assigned yet)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.job, self.src_task, self.dst_task)


@dataclass(frozen=True)
class JobPrediction:
    throughput: float  # items per second (1 / t_p)
    bottleneck: str  # what limits it: "compute <node>" or "flow <src>-><dst>"
    waiting_s: float = 0.0
    scheduled_at_s: float = 0.0
    latency_s: float = 0.0  # one item through the DAG with no queueing (critical path)


@dataclass(frozen=True)
class Plan:
    scheduler: str
    placements: tuple[Placement, ...] = ()
    flows: tuple[Flow, ...] = ()
    predicted: dict[str, JobPrediction] = field(default_factory=dict)
    waiting: tuple[str, ...] = ()  # jobs that could not be placed (yet)
    decision_s: float = 0.0  # wall time the scheduler took
    kind: str = "streams"  # the workload kind planned
    extension: Any = None  # the kind's own decisions (a registered dataclass) or None

    @property
    def jobs(self) -> list[str]:
        return sorted({p.job for p in self.placements})

    def placements_of(self, job: str) -> list[Placement]:
        return [p for p in self.placements if p.job == job]

    def flows_of(self, job: str) -> list[Flow]:
        return [f for f in self.flows if f.job == job]

    def without(self, jobs: set[str]) -> Plan:
        """The plan minus finished jobs (their resources are released)."""
        return replace(self, placements=tuple(p for p in self.placements if p.job not in jobs),
                       flows=tuple(f for f in self.flows if f.job not in jobs),
                       predicted={j: v for j, v in self.predicted.items() if j not in jobs})

    def to_dict(self) -> dict:
        d = asdict(replace(self, extension=None))
        d["extension"] = None if self.extension is None else asdict(self.extension)
        d["flows"] = [{**f, "path": list(f["path"])} for f in d["flows"]]
        d["placements"] = [{**p, "after": list(p["after"])} for p in d["placements"]]
        d["waiting"] = list(self.waiting)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        return cls(
            scheduler=d["scheduler"],
            placements=tuple(Placement(**{**p, "after": tuple(p.get("after", ()))})
                             for p in d["placements"]),
            flows=tuple(Flow(**{**f, "path": tuple(f["path"])}) for f in d["flows"]),
            predicted={k: JobPrediction(**v) for k, v in d["predicted"].items()},
            waiting=tuple(d.get("waiting", ())),
            decision_s=d.get("decision_s", 0.0),
            kind=d.get("kind", "streams"),
            extension=_extension(d.get("kind", "streams"), d.get("extension")),
        )

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls.from_dict(json.loads(text))


EXTENSIONS: dict[str, Any] = {}  # workload kind -> the dataclass of its Plan extension


def register_extension(kind: str, cls: Any) -> None:
    """`cls` (a dataclass whose fields are JSON values) holds what `kind`'s schedulers
    decide beyond placements and flows; it must offer `from_dict(dict) -> cls`."""
    EXTENSIONS[kind] = cls


def _extension(kind: str, data: dict | None) -> Any:
    if data is None:
        return None
    if kind not in EXTENSIONS:
        raise ValueError(f"a {kind} Plan carries an extension, but no extension type is "
                         "registered for that kind")
    return EXTENSIONS[kind].from_dict(data)
