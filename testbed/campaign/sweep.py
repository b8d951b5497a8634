"""The campaign file and its expansion into trials (pure): grid x repetitions, each trial with
its own recorded seed and a stable id, so a resumed campaign knows what it already ran.

    name: ents-bandwidth
    topology: {generate: {random_mesh: {nodes: 10, degree: 3, bw_var: 0.3}}}   # or a file
    jobs: workloads/attr-recognition.yaml
    mode: emulated            # or simulated
    grid:
      scheduler: [lr, br, tp, otfs, otfa]
      topology.generate.random_mesh.bw_mean: [1, 5, 10]
    repetitions: 3
    duration: 120s

Grid keys: `scheduler`, `duration`, and dotted paths into the topology (`topology.…`) or the
jobs file (`jobs.…`). A repetition's seed (seed + repetition) goes to a random mesh's `seed`
and to the jobs' Poisson arrivals, unless the grid sets them.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BeforeValidator, Field

from testbed.errors import TopologyError
from testbed.topology.loader import parse_model, read_file, read_yaml
from testbed.topology.schema import Strict
from testbed.units import parse_time_ms

Seconds = Annotated[float, BeforeValidator(lambda v: parse_time_ms(v if isinstance(v, str)
                                                                    else v * 1000) / 1000)]


class CampaignFile(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    topology: dict | str
    jobs: str
    mode: Literal["emulated", "simulated"] = "simulated"
    grid: dict[str, list[Any]] = {}
    repetitions: int = Field(1, ge=1)
    seed: int = 0
    duration: Seconds | None = None
    scheduler: str = "otfa"
    compute: Literal["synthetic", "torch"] = "synthetic"


@dataclass(frozen=True)
class Trial:
    id: str
    params: dict  # grid values, by grid key
    repetition: int
    seed: int
    topology: dict = field(compare=False)
    jobs: dict = field(compare=False)
    scheduler: str = "otfa"
    duration_s: float | None = None


@dataclass(frozen=True)
class Campaign:
    spec: CampaignFile
    source: Path
    trials: tuple[Trial, ...]


def load_campaign(path: str | Path) -> Campaign:
    path = Path(path)
    spec = parse_model(CampaignFile, read_yaml(read_file(path), str(path)), str(path))
    base = path.parent
    topology = spec.topology
    if isinstance(topology, str):
        topology = _read(base, topology, str(path), "topology")
    jobs = _read(base, spec.jobs, str(path), "jobs")
    for key in spec.grid:
        if key not in ("scheduler", "duration") and not key.startswith(("topology.", "jobs.")):
            raise TopologyError(str(path), f"grid.{key}", "is not a parameter a trial can vary",
                                "use scheduler, duration, topology.<path> or jobs.<path>")
        if not spec.grid[key]:
            raise TopologyError(str(path), f"grid.{key}", "has no values", "list at least one")
    return Campaign(spec, path, tuple(expand(spec, topology, jobs)))


def _read(base: Path, ref: str, source: str, field_: str) -> dict:
    for candidate in (base / ref, Path(ref)):
        if candidate.exists():
            return yaml.safe_load(candidate.read_text())
    raise TopologyError(source, field_, f"file {ref!r} not found",
                        "give a path relative to the campaign file or the working directory")


def expand(spec: CampaignFile, topology: dict, jobs: dict) -> list[Trial]:
    keys = list(spec.grid)
    trials = []
    for values in itertools.product(*(spec.grid[k] for k in keys)):
        params = dict(zip(keys, values, strict=True))
        for rep in range(spec.repetitions):
            seed = spec.seed + rep
            topo, job = copy.deepcopy(topology), copy.deepcopy(jobs)
            mesh = topo.get("generate", {}).get("random_mesh")
            if mesh is not None and "topology.generate.random_mesh.seed" not in params:
                mesh["seed"] = seed
            if "arrivals" in job and "jobs.arrivals.seed" not in params:
                job["arrivals"]["seed"] = seed
            for key, value in params.items():
                if key.startswith("topology."):
                    _set(topo, key[len("topology."):], value)
                elif key.startswith("jobs."):
                    _set(job, key[len("jobs."):], value)
            ident = hashlib.sha1(json.dumps([params, rep, seed], sort_keys=True,
                                            default=str).encode()).hexdigest()[:10]
            dur = params.get("duration", spec.duration)
            trials.append(Trial(ident, params, rep, seed, topo, job,
                                params.get("scheduler", spec.scheduler),
                                parse_time_ms(dur) / 1000 if isinstance(dur, str) else dur))
    return trials


def _set(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        tree = tree[int(p)] if isinstance(tree, list) else tree.setdefault(p, {})
    if isinstance(tree, list):
        tree[int(parts[-1])] = value
    else:
        tree[parts[-1]] = value
