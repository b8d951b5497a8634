"""Job files: DAGs of tasks with per-item work, memory and data volumes (a user-facing contract).

    jobs:
      - name: cam1
        source: e4             # node where the input items originate
        input: 6MB             # bytes per item sent from the source to each entry task
        arrival: 0s            # submission time
        tasks:
          detect: {work: 4.2, memory: 512MB, model: mobilenet_v2}
          attrs:  {work: 8.1, memory: 1GB, model: resnet50, after: {detect: 200kB}}

`work` is giga-operations per item; `after` maps each predecessor to the bytes it sends per item.
Errors name the file, the field and the fix, like topology errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import networkx as nx
from pydantic import BeforeValidator, Field

from testbed.errors import TopologyError
from testbed.topology.loader import parse_model, read_file, read_yaml
from testbed.topology.model import Topology
from testbed.topology.schema import Seconds, Strict
from testbed.units import parse_size_bytes

Size = Annotated[int, BeforeValidator(parse_size_bytes), Field(description='bytes, or "6MB"')]


class TaskSpec(Strict):
    work: float = Field(ge=0, description="giga-operations per item")
    memory: Size = 0
    model: str | None = None
    after: dict[str, Size] = {}
    node: str | None = Field(None, description="run this task on this node only")


class JobSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    source: str
    input: Size = 0
    arrival: Seconds = 0.0
    duration: Seconds = 60.0
    tasks: dict[str, TaskSpec]


class ArrivalSpec(Strict):
    poisson_rate: float = Field(gt=0, description="jobs per second")
    seed: int = 0


class ScaleSpec(Strict):
    data: float = Field(1.0, gt=0, description="factor on every data volume")
    work: float = Field(1.0, gt=0, description="factor on every task's work")


class JobsFile(Strict):
    kind: Literal["streams"] = Field("streams", description="the workload kind (see `testbed "
                                     "schedulers`); streams when absent")
    jobs: list[JobSpec]
    arrivals: ArrivalSpec | None = None
    scale: ScaleSpec = ScaleSpec()
    repeat: int = Field(1, ge=1, le=10_000,
                        description="copies of the job list (names get -2, -3, ...)")


@dataclass(frozen=True)
class Task:
    name: str
    work: float  # giga-operations per item
    memory_bytes: int
    model: str | None = None
    inputs: tuple[tuple[str, int], ...] = ()  # (predecessor, bytes per item)
    node: str | None = None  # pinned to this node


@dataclass(frozen=True)
class Job:
    name: str
    source: str
    input_bytes: int
    tasks: tuple[Task, ...]  # in a topological order
    arrival_s: float = 0.0
    duration_s: float = 60.0

    def task(self, name: str) -> Task:
        return next(t for t in self.tasks if t.name == name)

    @property
    def entry_tasks(self) -> list[Task]:
        return [t for t in self.tasks if not t.inputs]

    @property
    def memory_bytes(self) -> int:
        return sum(t.memory_bytes for t in self.tasks)

    @property
    def work(self) -> float:
        return sum(t.work for t in self.tasks)


@dataclass(frozen=True)
class JobSet:
    jobs: tuple[Job, ...]
    source: str = "<memory>"
    extra: dict = field(default_factory=dict)


def load_jobs(path: str | Path, topology: Topology | None = None,
              seed: int | None = None) -> JobSet:
    path = Path(path)
    return loads_jobs(read_file(path), str(path), topology, seed)


def loads_jobs(text: str, source: str = "<string>", topology: Topology | None = None,
               seed: int | None = None) -> JobSet:
    """`seed` overrides the file's arrival seed (Poisson arrivals and `source: "*"`)."""
    return jobs_from_data(read_yaml(text, source), source, topology, seed)


MAX_JOBS = 100_000


def jobs_from_data(data: object, source: str, topology: Topology | None = None,
                   seed: int | None = None) -> JobSet:
    """A job file's parsed YAML -> validated jobs (see loads_jobs)."""
    spec = parse_model(JobsFile, data, source)
    if len(spec.jobs) * spec.repeat > MAX_JOBS:
        raise TopologyError(source, "repeat", f"{len(spec.jobs) * spec.repeat:,} jobs are more "
                            f"than {MAX_JOBS:,}", "use a smaller repeat")
    if seed is not None and spec.arrivals:
        spec = spec.model_copy(update={"arrivals": spec.arrivals.model_copy(
            update={"seed": seed})})
    jobs = [scaled(_job(js, i, source, topology), spec.scale.data, spec.scale.work)
            for i, js in enumerate(spec.jobs)]
    names = [j.name for j in jobs]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise TopologyError(source, "jobs", f"two jobs are named {dup!r}", "give each a name")
    if spec.repeat > 1:
        jobs = [Job(**{**j.__dict__, "name": j.name if r == 0 else f"{j.name}-{r + 1}"})
                for r in range(spec.repeat) for j in jobs]
    if spec.arrivals:
        import random

        rng = random.Random(spec.arrivals.seed)
        t, timed = 0.0, []
        for j in jobs:
            timed.append(Job(**{**j.__dict__, "arrival_s": round(t, 6)}))
            t += rng.expovariate(spec.arrivals.poisson_rate)
        jobs = timed
    if topology is not None:
        jobs = resolve_sources(jobs, topology, spec.arrivals.seed if spec.arrivals else
                               (seed or 0))
    return JobSet(tuple(jobs), source)


def scaled(job: Job, data: float = 1.0, work: float = 1.0) -> Job:
    """The same job with data volumes and work multiplied (laptop-scale runs)."""
    if data == 1.0 and work == 1.0:
        return job
    tasks = tuple(Task(t.name, t.work * work, t.memory_bytes, t.model,
                       tuple((p, max(1, int(v * data))) for p, v in t.inputs), t.node)
                  for t in job.tasks)
    return Job(**{**job.__dict__, "tasks": tasks,
                  "input_bytes": max(1, int(job.input_bytes * data)) if job.input_bytes else 0})


def resolve_sources(jobs: list[Job], topology: Topology, seed: int = 0) -> list[Job]:
    """Jobs with `source: "*"` get a node drawn at random (seeded) from the topology."""
    import random

    rng = random.Random(seed + 7919)
    names = [n.name for n in topology.nodes]
    return [Job(**{**j.__dict__, "source": rng.choice(names)}) if j.source == "*" else j
            for j in jobs]


def _job(js: JobSpec, i: int, source: str, topology: Topology | None) -> Job:
    where = f"jobs[{i}]"
    if not js.tasks:
        raise TopologyError(source, f"{where}.tasks", "a job needs at least one task",
                            "add tasks: {name: {work: ...}}")
    if topology is not None and js.source != "*" and js.source not in {
            n.name for n in topology.nodes}:
        raise TopologyError(source, f"{where}.source", f"unknown node {js.source!r}",
                            f"use a node of {topology.source}")
    g = nx.DiGraph()
    g.add_nodes_from(js.tasks)
    for name, t in js.tasks.items():
        for pred in t.after:
            if pred not in js.tasks:
                raise TopologyError(source, f"{where}.tasks.{name}.after",
                                    f"unknown task {pred!r}", "name a task of this job")
            if pred == name:
                raise TopologyError(source, f"{where}.tasks.{name}.after",
                                    "a task cannot wait for itself", "remove it")
            g.add_edge(pred, name)
    if not nx.is_directed_acyclic_graph(g):
        cycle = " -> ".join(a for a, _ in nx.find_cycle(g))
        raise TopologyError(source, f"{where}.tasks", f"the tasks form a cycle ({cycle})",
                            "`after` must describe a DAG")
    order = list(nx.lexicographical_topological_sort(g, key=list(js.tasks).index))
    for name, t in js.tasks.items():
        if topology is not None and t.node is not None and t.node not in {
                n.name for n in topology.nodes}:
            raise TopologyError(source, f"{where}.tasks.{name}.node",
                                f"unknown node {t.node!r}", f"use a node of {topology.source}")
    tasks = tuple(Task(n, js.tasks[n].work, js.tasks[n].memory, js.tasks[n].model,
                       tuple(js.tasks[n].after.items()), js.tasks[n].node) for n in order)
    return Job(js.name, js.source, js.input, tasks, js.arrival, js.duration)
