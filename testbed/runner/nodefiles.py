"""Where a task's configuration goes and where its trace comes back from, per node kind.

A host node shares this host's filesystem; a container sees only its image and one shared
directory; a physical device has its own disk, reached by SFTP, and its own clock, so its
traces are shifted onto the testbed's clock when they are fetched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from testbed.devices.ssh import Endpoint, Session
from testbed.devices.stats import ClockOffset, clock_offset
from testbed.errors import TestbedError
from testbed.net.ledger import Ledger


class LocalFiles:
    """A host node: files are written where the run keeps them."""

    def put(self, local: Path, text: str) -> str:
        local.write_text(text)
        return str(local)

    def trace_path(self, local: Path) -> str:
        return str(local)

    def fetch(self, local: Path) -> None:
        pass


class SharedDir(LocalFiles):
    """A container: files go through the directory mounted at the same path inside it."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def put(self, local: Path, text: str) -> str:
        local.write_text(text)
        (self.dir / local.name).write_text(text)
        return str(self.dir / local.name)

    def trace_path(self, local: Path) -> str:
        return str(self.dir / local.name)

    def fetch(self, local: Path) -> None:
        if (self.dir / local.name).exists():
            shutil.move(self.dir / local.name, local)


UNPRIVILEGED_UID = 65534


class UnprivilegedFiles(SharedDir):
    """A host node whose tasks run as nobody: the run directory may sit anywhere root alone can
    enter, so configs go (readable) and traces come back (pre-made, owned by nobody) through a
    directory of their own that nobody can reach."""

    def __init__(self) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="testbed-tasks-")))
        os.chmod(self.dir, 0o755)

    def trace_path(self, local: Path) -> str:
        path = self.dir / local.name
        path.touch()
        os.chown(path, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
        return str(path)

    def fetch(self, local: Path) -> None:
        super().fetch(local)
        if not any(self.dir.iterdir()):
            self.dir.rmdir()


class DeviceFiles(LocalFiles):
    """A physical device: files go by SFTP into the testbed's directory there; traces come back
    with their timestamps moved from the device's clock to the testbed's."""

    def __init__(self, ledger: Ledger, node: str) -> None:
        ssh = ledger.topology["nodes"][node]["ssh"]
        self.session = Session(Endpoint.of(node, ssh), retry_for_s=15)
        self.dir = ledger.extra["devices"][node]["deploy_dir"] + "/run"
        self.session.run(f"mkdir -p '{self.dir}'", check=True)
        self.offset: ClockOffset = clock_offset(self.session)

    def put(self, local: Path, text: str) -> str:
        local.write_text(text)
        with self.session.sftp() as sftp:
            sftp.put(str(local), f"{self.dir}/{local.name}")
        return f"{self.dir}/{local.name}"

    def trace_path(self, local: Path) -> str:
        return f"{self.dir}/{local.name}"

    def fetch(self, local: Path) -> None:
        try:
            with self.session.sftp() as sftp:
                try:
                    sftp.get(f"{self.dir}/{local.name}", str(local))
                except FileNotFoundError:
                    return
                sftp.remove(f"{self.dir}/{local.name}")
        except TestbedError:  # the device went away: its job already failed with the reason
            return
        shift = int(self.offset.offset_s * 1e9)
        lines = local.read_text().splitlines()
        fixed = [f"{int(ts) - shift},{rest}" for ts, _, rest in (ln.partition(",") for ln in lines)
                 if ts.lstrip("-").isdigit()]
        local.write_text("".join(f"{ln}\n" for ln in fixed))


def files_for(ledger: Ledger, node: str, unprivileged: bool = False) -> LocalFiles:
    kind = ledger.topology["nodes"][node]["kind"]
    if kind == "docker":
        return SharedDir(ledger.names.share_dir(node))
    if kind == "device":
        return DeviceFiles(ledger, node)
    return UnprivilegedFiles() if unprivileged else LocalFiles()
