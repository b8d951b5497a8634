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
    host: jetson-lab          # with --cluster: only on the host labelled so (optional)

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
from typing import Any, Literal

import yaml
from pydantic import Field

import testbed
from testbed.errors import InputError, TopologyError
from testbed.topology.loader import parse_model, read_file, read_yaml
from testbed.topology.schema import Seconds, Strict
from testbed.units import parse_time_ms

MAX_TRIALS = 100_000


class CampaignFile(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    topology: dict | str
    jobs: str
    mode: Literal["emulated", "simulated"] = "simulated"
    grid: dict[str, list[Any]] = {}
    repetitions: int = Field(1, ge=1, le=10_000)
    seed: int = Field(0, ge=0, le=2**31)
    duration: Seconds | None = None
    scheduler: str = "otfa"
    compute: Literal["synthetic", "torch"] = "synthetic"
    plugins: list[str] = []  # scheduler plug-ins: module names or .py files beside this file
    k_paths: int = Field(3, ge=1, le=20, description="candidate paths per flow")
    host: str | None = Field(None, pattern=r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$",
                             description="with --cluster: run every trial on the host whose "
                                         "Ray node has the label testbed-host=HOST")


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
    base_topology: dict = field(default_factory=dict, compare=False, repr=False)
    base_jobs: dict = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Campaign:
    spec: CampaignFile
    source: Path
    trials: tuple[Trial, ...]


def load_campaign(path: str | Path) -> Campaign:
    path = Path(path)
    spec = parse_model(CampaignFile, read_yaml(read_file(path), str(path)), str(path))
    base = path.parent
    load_plugins(spec.plugins, base, str(path))
    topology = spec.topology
    if isinstance(topology, str):
        topology = _read(base, topology, str(path), "topology")
    jobs = _read(base, spec.jobs, str(path), "jobs")
    if jobs.get("kind") == "video":  # trials write their own jobs file: traces go inline
        from testbed.kinds.video.spec import inline_traces

        jobs_dir = (base / spec.jobs if (base / spec.jobs).exists() else Path(spec.jobs)).parent
        jobs = inline_traces(jobs, jobs_dir, str(path))
    total = spec.repetitions
    for key in spec.grid:
        if key not in ("scheduler", "duration") and not key.startswith(("topology.", "jobs.")):
            raise TopologyError(str(path), f"grid.{key}", "is not a parameter a trial can vary",
                                "use scheduler, duration, topology.<path> or jobs.<path>")
        if not spec.grid[key]:
            raise TopologyError(str(path), f"grid.{key}", "has no values", "list at least one")
        total *= len(spec.grid[key])
    if total > MAX_TRIALS:  # counted before anything is expanded
        raise TopologyError(str(path), "grid", f"{total:,} trials (grid x repetitions) are "
                            f"more than {MAX_TRIALS:,}", "sweep fewer values or repetitions")
    campaign = Campaign(spec, path, tuple(expand(spec, topology, jobs)))
    validate_trials(campaign)
    return campaign


def load_plugins(plugins: list[str], base: Path, source: str) -> None:
    from testbed.schedulers.plugins import load_module

    for i, name in enumerate(plugins):
        try:
            load_module(name, base)
        except InputError as e:
            raise TopologyError(source, f"plugins[{i}]", str(e),
                                "name an importable module or a .py file") from None


def validate_trials(campaign: Campaign) -> None:
    """Build every distinct trial's topology and jobs and look up its scheduler, so that a
    misspelled grid key or an unknown scheduler fails `--dry-run`, not every trial later."""
    from testbed.kinds import KINDS
    from testbed.schedulers import get
    from testbed.topology.loader import build
    from testbed.topology.schema import TopologyFile

    source = str(campaign.source)
    seen: set[str] = set()
    for t in campaign.trials:
        where = "grid" if t.params else "topology"
        kind = t.jobs.get("kind", "streams") if isinstance(t.jobs, dict) else "streams"
        if kind not in KINDS:
            raise TopologyError(source, "jobs", f"kind: {kind!r} is not a workload kind",
                                f"use one of {', '.join(KINDS)}")
        if kind != "streams" and campaign.spec.mode == "simulated":
            raise TopologyError(source, "mode", f"{kind} workloads have no simulated mode",
                                "write mode: emulated")
        try:
            get(t.scheduler, kind)
        except InputError as e:
            raise TopologyError(source, "grid.scheduler" if "scheduler" in t.params else
                                "scheduler", str(e), "see `testbed schedulers`") from None
        key = json.dumps([t.topology, t.jobs], sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        try:
            topo = build(parse_model(TopologyFile, t.topology, "topology"), "topology")
            KINDS[kind].load(yaml.safe_dump(t.jobs), "jobs", topo, t.seed)
        except InputError as e:
            shown = ", ".join(f"{k}={v}" for k, v in t.params.items()) or "the base settings"
            raise TopologyError(source, where, f"the trial with {shown} is invalid: {e}",
                                "check the grid keys and values against the topology and "
                                "job formats") from None


def _read(base: Path, ref: str, source: str, field_: str) -> dict:
    for candidate in (base / ref, Path(ref)):
        if candidate.exists():
            data = read_yaml(read_file(candidate), str(candidate))
            if not isinstance(data, dict):
                raise TopologyError(str(candidate), "", "the file is not a mapping",
                                    f"`{field_}:` in {source} must name a YAML file of keys")
            return data
    raise TopologyError(source, field_, f"file {ref!r} not found",
                        "give a path relative to the campaign file or the working directory")


def trial_identity(spec: CampaignFile, topology: dict, jobs: dict, scheduler: str,
                   duration_s: float | None, repetition: int, seed: int) -> str:
    """A trial's id: a hash of everything that decides its outcome (the resolved topology and
    jobs, every setting, the project's version), so a changed campaign never reuses rows."""
    resolved = {"topology": topology, "jobs": jobs, "scheduler": scheduler,
                "duration_s": duration_s, "mode": spec.mode, "compute": spec.compute,
                "repetition": repetition, "seed": seed, "version": testbed.__version__,
                **({"k_paths": spec.k_paths} if spec.k_paths != 3 else {})}
    return hashlib.sha1(json.dumps(resolved, sort_keys=True, default=str).encode()
                        ).hexdigest()[:10]


def settings(campaign: Campaign) -> dict:
    """What a resume compares: the campaign's settings and its resolved input files."""
    spec = campaign.spec.model_dump()
    topo = spec.pop("topology")
    return {**{k: v for k, v in spec.items()}, "topology": topo,
            "topology contents": campaign.trials[0].base_topology if campaign.trials else None,
            "jobs file contents": campaign.trials[0].base_jobs if campaign.trials else None,
            "version": testbed.__version__}


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
            dur = params.get("duration", spec.duration)
            duration_s = parse_time_ms(dur) / 1000 if isinstance(dur, str) else dur
            scheduler = params.get("scheduler", spec.scheduler)
            ident = trial_identity(spec, topo, job, scheduler, duration_s, rep, seed)
            trials.append(Trial(ident, params, rep, seed, topo, job, scheduler, duration_s,
                                topology, jobs))
    return trials


def _set(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        tree = tree[int(p)] if isinstance(tree, list) else tree.setdefault(p, {})
    if isinstance(tree, list):
        tree[int(parts[-1])] = value
    else:
        tree[parts[-1]] = value
