"""The state file of a running testbed: written before anything is built, read by status/down.

It records the topology, the controller process (pid and start time, so a recycled pid is never
killed), the interface tag the testbed owns and the build phase. Writes are atomic (a unique
temporary file + rename); the state directory is 0700 and its files 0600, since they name the
controller's ports and sockets.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from testbed.naming import STATE_ROOT, Names, is_testbed_name
from testbed.procs import process_start_ticks


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
    controller: ProcessRecord | None = None
    tag: str = ""  # the interface/bridge tag this testbed owns (Names.tag)
    extra: dict = field(default_factory=dict)

    @property
    def names(self) -> Names:
        return Names(self.name)

    @property
    def path(self) -> Path:
        return self.names.state_dir / "state.json"

    def save(self) -> None:
        make_state_dir(self.path.parent)
        write_private(self.path, json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, name: str) -> Ledger | None:
        path = Names(name).state_dir / "state.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        ctl = data.pop("controller", None)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known},
                   controller=ProcessRecord(**ctl) if ctl else None)


def known_testbeds() -> list[str]:
    """Names of testbeds with a state directory on this host."""
    if not STATE_ROOT.exists():
        return []
    return sorted(p.name for p in STATE_ROOT.iterdir() if p.is_dir() and is_testbed_name(p.name))


def make_state_dir(path: Path) -> None:
    """The state root and a testbed's directory, readable by root only."""
    for d in (STATE_ROOT, path):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(d, 0o700)


def write_private(path: Path, text: str) -> None:
    """Atomically replace `path` with `text`, mode 0600; safe under concurrent writers (each
    writes its own temporary file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
