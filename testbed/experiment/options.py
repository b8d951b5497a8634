"""The options of one run (`testbed run`), apart from the engine so that the library surface
can offer them without loading the engine's dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from testbed.schedulers.network import DEFAULT_GOPS_PER_CORE


@dataclass
class RunOptions:
    scheduler: str
    out_dir: Path
    duration_s: float | None = None  # overrides each job's duration
    seed: int | None = None
    compute: str = "synthetic"  # or "torch"
    window: int | None = None  # items in flight per job (default: tasks + 1)
    rate_fps: float | None = None  # cap on the source's frame rate
    items: int | None = None  # stop each source after this many items
    warmup_items: int = 1
    sample_s: float = 1.0
    k_paths: int = 3
    gops_per_core: float = DEFAULT_GOPS_PER_CORE  # synthetic mode's unit of work
    drain_s: float = 10.0  # the source waits this long for items in flight after its end
    resolution: int = 224  # input size of torch models
    unprivileged: bool = False  # tasks on host/docker nodes run as nobody, no capabilities
    timeline: Path | None = None  # changes during the run (else the topology's timeline:)
    server_mode: str | None = None  # training: overrides the file's server_mode
