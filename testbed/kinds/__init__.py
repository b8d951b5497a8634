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
from testbed.kinds.streams.executor import Streams
from testbed.net.controller import ensure_controller
from testbed.net.ledger import Ledger
from testbed.schedulers.jobs import loads_jobs
from testbed.topology.loader import read_file, read_yaml
from testbed.topology.model import Topology

Progress = Callable[[str], None]
Loader = Callable[[str, str, Topology, "int | None"], list]  # (text, source, topo, seed)


@dataclass(frozen=True)
class WorkloadKind:
    name: str
    summary: str
    load: Loader  # the file's units of work (each with .name and .arrival_s)
    executor: type[Experiment]


KINDS: dict[str, WorkloadKind] = {}
PLANNED = {"training": "split federated learning rounds (EdgeSplit): issue #14",
           "requests": "request dispatch across edges (CoRaiS): issue #15"}


def register(kind: WorkloadKind) -> None:
    KINDS[kind.name] = kind


def _load_streams(text: str, source: str, topo: Topology, seed: int | None) -> list:
    return list(loads_jobs(text, source, topo, seed=seed).jobs)


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
    if opts.compute not in ("synthetic", "torch"):
        raise InputError(f"--compute {opts.compute!r}: use synthetic or torch")
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    return kind.executor(ledger, units, opts, progress).run()


register(WorkloadKind("streams", "DAG jobs processing streams of items (ENTS, DCEI)",
                      _load_streams, Streams))
