"""Per-node cgroups (v1 cpu, memory, pids) under testbed/<name>/<node>: CPU quota and memory
limit for host nodes, and the membership list that tells cleanup which processes are ours."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from testbed.net.names import CGROUP_ROOT, Names

CFS_PERIOD_US = 100_000


def create(names: Names, node: str, cpu: float | None, memory_mb: int | None) -> None:
    for d in names.cgroup_dirs(node):
        if d.parent.parent.parent.exists():  # the controller is mounted here
            d.mkdir(parents=True, exist_ok=True)
    set_limits(names, node, cpu, memory_mb)


def set_limits(names: Names, node: str, cpu: float | None, memory_mb: int | None) -> None:
    """CPU quota (cores) and memory limit (MB, no swap) of a node; None leaves one as it is."""
    cpu_dir, mem_dir = names.cgroup_dirs(node)[:2]
    if cpu is not None and cpu_dir.exists():
        (cpu_dir / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
        (cpu_dir / "cpu.cfs_quota_us").write_text(str(int(cpu * CFS_PERIOD_US)))
    if memory_mb is not None and mem_dir.exists():
        limit = str(memory_mb * 1024 * 1024)
        swap = mem_dir / "memory.memsw.limit_in_bytes"  # memory+swap: must stay >= memory
        grow = int((mem_dir / "memory.limit_in_bytes").read_text()) < int(limit)
        if swap.exists() and grow:
            swap.write_text(limit)
        (mem_dir / "memory.limit_in_bytes").write_text(limit)
        if swap.exists() and not grow:
            swap.write_text(limit)


def join(names: Names, node: str, pid: int = 0) -> None:
    """Move a process (default: this one) into the node's cgroups."""
    for d in names.cgroup_dirs(node):
        if d.exists():
            (d / "cgroup.procs").write_text(str(pid or os.getpid()))


def pids(names: Names) -> set[int]:
    """Every process in any of this testbed's cgroups."""
    out: set[int] = set()
    for top in names.cgroup_dirs():
        if top.exists():
            for procs in top.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    out |= {int(x) for x in procs.read_text().split()}
    return out


def oom_kills(names: Names, node: str) -> int:
    """How many processes the kernel's OOM killer killed in the node's memory cgroup and the
    cgroups below it (a container's own); v1 counts each kill only where the victim was."""
    total = 0
    top = names.cgroup_dirs(node)[1]
    for f in [top / "memory.oom_control", *top.glob("*/memory.oom_control")]:
        with contextlib.suppress(OSError):
            for line in f.read_text().splitlines():
                if line.startswith("oom_kill "):
                    total += int(line.split()[1])
    return total


def kill_all(pids_: set[int]) -> None:
    for pid in pids_:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def remove(names: Names) -> None:
    """Remove the testbed's cgroup directories, deepest first (they must be empty), in every
    hierarchy: Docker makes testbed/<name>/<node> parents in all of them for its containers."""
    tops = [h / "testbed" / names.testbed for h in CGROUP_ROOT.iterdir()
            if (h / "testbed" / names.testbed).is_dir() and not h.is_symlink()]
    for top in tops:
        if not top.exists():
            continue
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for d in [*dirs, top]:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)  # killed tasks take a moment to leave
    for top in tops:
        parent = top.parent
        with contextlib.suppress(OSError):
            if parent.name == "testbed":
                parent.rmdir()  # only succeeds when no other testbed uses it


def usage(names: Names, node: str) -> tuple[float, int]:
    """(CPU seconds used so far, memory bytes in use) of the node's cgroups."""
    cpu_s, mem = 0.0, 0
    cpu_dir, mem_dir = names.cgroup_dirs(node)[3], names.cgroup_dirs(node)[1]
    with contextlib.suppress(OSError, ValueError):
        cpu_s = int((cpu_dir / "cpuacct.usage").read_text()) / 1e9
    with contextlib.suppress(OSError, ValueError):
        mem = int((mem_dir / "memory.usage_in_bytes").read_text())
    return cpu_s, mem


def available() -> dict[str, bool]:
    return {c: (Path("/sys/fs/cgroup") / c / "cgroup.procs").exists()
            for c in ("cpu", "memory", "pids")}
