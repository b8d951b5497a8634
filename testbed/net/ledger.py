"""The state file of a running testbed: written before anything is built, read by status/down.

It records the topology, the controller process (pid and start time, so a recycled pid is never
killed) and the build phase. Writes are atomic (temp file + rename).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from testbed.net.names import STATE_ROOT, Names


@dataclass
class ProcessRecord:
    pid: int
    start_ticks: int

    @classmethod
    def of(cls, pid: int) -> ProcessRecord:
        return cls(pid, process_start_ticks(pid) or 0)

    def alive(self) -> bool:
        """True only if the same process (not a recycled pid) still runs."""
        return self.pid > 0 and process_start_ticks(self.pid) == self.start_ticks


@dataclass
class Ledger:
    name: str
    topology_file: str
    topology: dict
    phase: str = "building"  # building -> up
    of_port: int = 0
    api_port: int = 0
    controller: ProcessRecord | None = None
    extra: dict = field(default_factory=dict)

    @property
    def names(self) -> Names:
        return Names(self.name)

    @property
    def path(self) -> Path:
        return self.names.state_dir / "state.json"

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, name: str) -> Ledger | None:
        path = Names(name).state_dir / "state.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        ctl = data.pop("controller", None)
        return cls(**data, controller=ProcessRecord(**ctl) if ctl else None)


def known_testbeds() -> list[str]:
    """Names of testbeds with a state directory on this host."""
    return sorted(p.name for p in STATE_ROOT.iterdir() if p.is_dir()) if STATE_ROOT.exists() else []


def process_start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # a zombie is dead even if nobody reaped it yet
        return None
    return int(fields[19])
