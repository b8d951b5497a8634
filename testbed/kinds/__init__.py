"""Workload kinds behind one experiment interface. A workload file says which kind it is
(`kind: streams`, the default); each kind has its file model, its executor (an
`Experiment` subclass) and its own tables, while profiling, enforcement, processes,
sampling and the shared records come from `testbed.experiment`. A new kind is one package
under kinds/ and one `register` line here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from testbed.errors import InputError
from testbed.experiment.loop import Experiment
from testbed.experiment.options import RunOptions
from testbed.kinds.requests import policies as _requests_policies  # noqa: F401 (registers)
from testbed.kinds.requests.executor import Requests
from testbed.kinds.streams.executor import Streams
from testbed.kinds.training import decision as _training_strategies  # noqa: F401 (registers)
from testbed.kinds.training.executor import Training
from testbed.kinds.video import decision as _video_strategies  # noqa: F401 (registers)
from testbed.kinds.video.executor import Video
from testbed.net.controller import ensure_controller
from testbed.net.ledger import Ledger
from testbed.schedulers.jobs import loads_jobs
from testbed.schedulers.plan import Plan
from testbed.topology.loader import read_file, read_yaml
from testbed.topology.model import Topology

Progress = Callable[[str], None]
Loader = Callable[[str, str, Topology, "int | None"], list]  # (text, source, topo, seed)
# (topology, workload file, its text, scheduler, seed, gops per core) -> Plan, no network
Offline = Callable[[Topology, Path, str, str, int, "float | None", int], Plan]


@dataclass(frozen=True)
class WorkloadKind:
    name: str
    summary: str
    load: Loader  # the file's units of work (each with .name and .arrival_s)
    executor: type[Experiment] | None  # None: decided offline only (no emulated run yet)
    schedule: Offline  # `testbed schedule`: one decision on the topology's offline model


KINDS: dict[str, WorkloadKind] = {}
PLANNED: dict[str, str] = {}


def register(kind: WorkloadKind) -> None:
    KINDS[kind.name] = kind


def _load_streams(text: str, source: str, topo: Topology, seed: int | None) -> list:
    return list(loads_jobs(text, source, topo, seed=seed).jobs)


def _schedule_streams(topo: Topology, path: Path, text: str, scheduler: str, seed: int,
                      gops_per_core: float | None, k_paths: int) -> Plan:
    from testbed.schedulers.offline import schedule

    return schedule(topo, path, scheduler, k_paths, gops_per_core)


def _load_requests(text: str, source: str, topo: Topology, seed: int | None) -> list:
    from testbed.kinds.requests.spec import loads

    return [loads(text, source, topo)]


def _schedule_requests(topo: Topology, path: Path, text: str, scheduler: str, seed: int,
                       gops_per_core: float | None, k_paths: int) -> Plan:
    from testbed.kinds.requests.decision import schedule_offline
    from testbed.kinds.requests.spec import loads

    return schedule_offline(topo, loads(text, str(path), topo), scheduler, seed, gops_per_core)


def _load_training(text: str, source: str, topo: Topology, seed: int | None) -> list:
    from testbed.kinds.training.spec import loads

    return [loads(text, source, topo)]


def _schedule_training(topo: Topology, path: Path, text: str, scheduler: str, seed: int,
                       gops_per_core: float | None, k_paths: int) -> Plan:
    from testbed.kinds.training.decision import schedule_offline
    from testbed.kinds.training.spec import loads

    return schedule_offline(topo, loads(text, str(path), topo), scheduler, gops_per_core)


def _load_video(text: str, source: str, topo: Topology, seed: int | None) -> list:
    from testbed.kinds.video.spec import loads

    return [loads(text, source, topo)]


def _schedule_video(topo: Topology, path: Path, text: str, scheduler: str, seed: int,
                    gops_per_core: float | None, k_paths: int) -> Plan:
    from testbed.kinds.video.decision import schedule_offline
    from testbed.kinds.video.spec import loads

    return schedule_offline(topo, loads(text, str(path), topo), scheduler, gops_per_core, seed)


def schedule(topology: str | Path, workload_file: str | Path, scheduler: str,
             k_paths: int = 3, gops_per_core: float | None = None, seed: int = 0) -> Plan:
    """`testbed schedule`: one decision of `scheduler` on the workload file, no network."""
    from testbed.schedulers import get
    from testbed.topology import load

    text = read_file(Path(workload_file))
    kind = kind_of(workload_file, text)
    get(scheduler.partition(":")[0], kind.name)
    return kind.schedule(load(topology), Path(workload_file), text, scheduler, seed,
                         gops_per_core, k_paths)


def kind_of(path: str | Path, text: str) -> WorkloadKind:
    """The workload kind a file declares (`kind:`; streams when absent)."""
    data = read_yaml(text, str(path))
    name = data.get("kind", "streams") if isinstance(data, dict) else "streams"
    if name in KINDS:
        return KINDS[name]
    later = f" ({PLANNED[name]}, not built yet)" if name in PLANNED else ""
    raise InputError(f"{path}: kind: {name!r} is not a workload kind this testbed runs"
                     f"{later}; fix: use one of {', '.join(KINDS)}")


def run(name: str | None, workload_file: str | Path, opts: RunOptions,
        progress: Progress = lambda s: None) -> pd.DataFrame:
    """`testbed run`: one experiment of the file's workload kind on the running testbed."""
    from testbed import lifecycle

    text = read_file(Path(workload_file))
    kind = kind_of(workload_file, text)  # a wrong file is refused before the testbed is touched
    ledger: Ledger = lifecycle.resolve(name)
    if ensure_controller(ledger):
        progress("the controller was dead or stuck: restarted it")
    topo = Topology.from_dict(ledger.topology, ledger.topology_file)
    units = kind.load(text, str(workload_file), topo, opts.seed)
    if kind.executor is None:
        raise InputError(f"{workload_file}: {kind.name} workloads are decided offline only "
                         "so far (`testbed schedule`); their emulated run is not built yet")
    if opts.compute not in ("synthetic", "torch"):
        raise InputError(f"--compute {opts.compute!r}: use synthetic or torch")
    return kind.executor(ledger, units, opts, progress).run()  # it makes opts.out_dir


register(WorkloadKind("streams", "DAG jobs processing streams of items (ENTS, DCEI)",
                      _load_streams, Streams, _schedule_streams))
register(WorkloadKind("training", "split federated learning rounds between devices and a "
                      "server (EdgeSplit)", _load_training, Training, _schedule_training))
register(WorkloadKind("requests", "requests dispatched to edge services each period (CoRaiS)",
                      _load_requests, Requests, _schedule_requests))
register(WorkloadKind("video", "camera streams mapped to edge devices, detection and shared "
                      "re-identification models (DCEI)", _load_video, Video, _schedule_video))
