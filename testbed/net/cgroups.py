"""Per-node cgroups under testbed/<name>/<node>: CPU quota and memory limit for host nodes, and
the membership list that tells cleanup which processes are ours.

Works with both kernel interfaces, detected at run time (never assumed):
- v1 (and hybrid, where the controllers still live on the v1 side): one directory per
  controller (cpu, memory, pids, cpuacct), `cpu.cfs_quota_us`, `memory.limit_in_bytes`;
- v2 (the unified hierarchy Debian 12 and Ubuntu 22.04+ boot with): one directory, `cpu.max`,
  `memory.max`, `memory.swap.max`, controllers enabled down the tree through
  `cgroup.subtree_control`.
A limit that cannot be applied is a CapabilityError naming the node, the limit and why: a node
never runs unlimited because a file was missing. `limits()` reads back what the kernel holds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from testbed.errors import CapabilityError
from testbed.naming import CGROUP_ROOT, Names

CFS_PERIOD_US = 10_000  # short: see cpu_limits
MIN_QUOTA_US = 1_000  # the kernel's smallest quota
MB = 1_000_000  # the project's unit: 1MB = 10^6 bytes, 1GB = 10^9 (MiB/GiB say binary)
V1_CONTROLLERS = ("cpu", "memory", "pids", "cpuacct")
V2_CONTROLLERS = ("cpu", "memory", "pids")


def mode(root: Path = CGROUP_ROOT) -> str:
    """"v2" (unified), "hybrid" (v1 controllers plus an empty unified tree) or "v1"."""
    if (root / "cgroup.controllers").exists():
        return "v2"
    if (root / "unified" / "cgroup.controllers").exists():
        return "hybrid"
    return "v1"


def _v2(root: Path) -> bool:
    return mode(root) == "v2"


def _sub(names: Names, node: str | None) -> Path:
    return Path("testbed") / names.testbed / (node or "")


def node_dirs(names: Names, node: str | None = None, root: Path = CGROUP_ROOT) -> list[Path]:
    """The directories a process of `node` belongs to (one on v2, one per controller on v1);
    with node None, the testbed's own directories."""
    if _v2(root):
        return [root / _sub(names, node)]
    return [root / c / _sub(names, node) for c in V1_CONTROLLERS]


def available(root: Path = CGROUP_ROOT) -> dict[str, bool]:
    """Which controllers this host offers the testbed."""
    if _v2(root):
        have = (root / "cgroup.controllers").read_text().split()
        return {c: c in have for c in V2_CONTROLLERS}
    return {c: (root / c / "cgroup.procs").exists() for c in ("cpu", "memory", "pids")}


def _need(node: str, what: str, controller: str, root: Path) -> None:
    if not available(root).get(controller):
        raise CapabilityError(
            f"node {node}: cannot apply its {what} limit: the {controller} cgroup controller is "
            f"not available here ({mode(root)} hierarchy at {root}); remove `{what}:` or use "
            "a host whose kernel offers it (see `testbed doctor`)")


def create(names: Names, node: str, cpu: float | None, memory_mb: int | None,
           root: Path = CGROUP_ROOT) -> None:
    if _v2(root):
        top = root / _sub(names, node)
        top.mkdir(parents=True, exist_ok=True)
        _enable_v2(root, top.parent)
    else:
        for d in node_dirs(names, node, root):
            if d.parent.parent.parent.exists():  # the controller is mounted here
                d.mkdir(parents=True, exist_ok=True)
    set_limits(names, node, cpu, memory_mb, root)


def _enable_v2(root: Path, upto: Path) -> None:
    """Delegate cpu, memory and pids from the root down to `upto` (v2 limits only work in a
    cgroup whose parent enabled the controller)."""
    wanted = [c for c in V2_CONTROLLERS if available(root).get(c)]
    d = root
    for part in [None, *upto.relative_to(root).parts]:
        if part is not None:
            d = d / part
        ctl = d / "cgroup.subtree_control"
        have = ctl.read_text().split() if ctl.exists() else []
        missing = [c for c in wanted if c not in have]
        if missing:
            ctl.write_text(" ".join(f"+{c}" for c in missing))


def cpu_limits(cpu: float) -> tuple[int, int]:
    """(quota, period) in microseconds for `cpu` cores. The period is short (10 ms, longer
    only where the quota would fall under the kernel's 1 ms) because a node that alternates
    computing with waiting for the network starts each burst on a fresh period's quota and
    runs it at a whole core's speed: on a 0.15-core node 20 ms of work after a pause ran 3.6x
    faster than sustained with 100-ms periods, 1.3x with 10-ms (bench/cpu_bursts.py). A period
    per node with 5-ms slices (33 ms at 0.15 core) makes each slice cheaper but lets 5 ms of
    work after a pause run 4.8x faster, so every node keeps 10 ms."""
    period = max(CFS_PERIOD_US, -(-MIN_QUOTA_US * 1000 // max(int(cpu * 1000), 1)))
    return max(MIN_QUOTA_US, int(cpu * period)), period


def set_limits(names: Names, node: str, cpu: float | None, memory_mb: int | None,
               root: Path = CGROUP_ROOT) -> None:
    """CPU quota (cores) and memory limit (MB, no swap) of a node; None leaves one as it is."""
    if cpu is not None:
        _need(node, "cpu", "cpu", root)
    if memory_mb is not None:
        _need(node, "memory", "memory", root)
    limit = memory_mb * MB if memory_mb is not None else None  # MB = 10^6 bytes everywhere
    if _v2(root):
        d = root / _sub(names, node)
        if cpu is not None:
            (d / "cpu.max").write_text("{} {}".format(*cpu_limits(cpu)))
        if limit is not None:
            (d / "memory.max").write_text(str(limit))
            swap = d / "memory.swap.max"
            if swap.exists():
                swap.write_text("0")
        return
    cpu_dir, mem_dir = node_dirs(names, node, root)[:2]
    if cpu is not None:
        _cpu_quota_v1(cpu_dir, cpu)
    if limit is not None:
        swap = mem_dir / "memory.memsw.limit_in_bytes"  # memory+swap: must stay >= memory
        grow = int((mem_dir / "memory.limit_in_bytes").read_text()) < limit
        if swap.exists() and grow:
            swap.write_text(str(limit))
        (mem_dir / "memory.limit_in_bytes").write_text(str(limit))
        if swap.exists() and not grow:
            swap.write_text(str(limit))


def _cpu_quota_v1(cpu_dir: Path, cores: float) -> None:
    quota, period = cpu_limits(cores)
    (cpu_dir / "cpu.cfs_period_us").write_text(str(period))
    (cpu_dir / "cpu.cfs_quota_us").write_text(str(quota))


def limits(names: Names, node: str, root: Path = CGROUP_ROOT) -> dict[str, float | int | None]:
    """What the kernel holds now: {"cpu": cores or None, "memory_mb": MB or None}."""
    out: dict[str, float | int | None] = {"cpu": None, "memory_mb": None}
    with contextlib.suppress(OSError, ValueError):
        if _v2(root):
            d = root / _sub(names, node)
            quota, period = (d / "cpu.max").read_text().split()
            out["cpu"] = None if quota == "max" else int(quota) / int(period)
            mem = (d / "memory.max").read_text().strip()
            out["memory_mb"] = None if mem == "max" else round(int(mem) / MB)  # page-rounded
        else:
            cpu_dir, mem_dir = node_dirs(names, node, root)[:2]
            quota = int((cpu_dir / "cpu.cfs_quota_us").read_text())
            period = int((cpu_dir / "cpu.cfs_period_us").read_text())
            out["cpu"] = None if quota < 0 else quota / period
            mem = int((mem_dir / "memory.limit_in_bytes").read_text())
            out["memory_mb"] = None if mem >= 2**62 else round(mem / MB)
    return out


def join(names: Names, node: str, pid: int = 0, root: Path = CGROUP_ROOT) -> None:
    """Move a process (default: this one) into the node's cgroups."""
    for d in node_dirs(names, node, root):
        if d.exists():
            (d / "cgroup.procs").write_text(str(pid or os.getpid()))


def cpu_slices(names: Names, node: str, cores: dict[str, float], owner: int | None = None,
               root: Path = CGROUP_ROOT) -> dict[str, str]:
    """Give processes of a host node CPU quotas of their own inside the node's: one child
    cgroup per label (`slice.<label>`) with `cores`; returns label -> the cgroup.procs file a
    process writes its pid into to join (made writable by uid `owner` for processes that run
    unprivileged). The node's own quota still caps them all. cgroup v1 only: on v2 a cgroup
    with processes of its own cannot hand its CPU controller down."""
    if _v2(root):
        raise CapabilityError(
            f"node {node}: CPU slices inside a node need cgroup v1 (this host has the unified v2 "
            "hierarchy, where the node's own processes would first have to move into a leaf); "
            "fix: leave the setting that asks for slices (e.g. server_share) at its default")
    _need(node, "cpu", "cpu", root)
    top = node_dirs(names, node, root)[0]
    out = {}
    for label, c in cores.items():
        d = top / f"slice.{label}"
        d.mkdir(exist_ok=True)
        _cpu_quota_v1(d, c)
        if owner is not None:
            os.chown(d / "cgroup.procs", owner, owner)
        out[label] = str(d / "cgroup.procs")
    return out


def remove_cpu_slices(names: Names, node: str, root: Path = CGROUP_ROOT) -> None:
    """Remove the node's CPU slices (their processes gone: the kernel moves none back)."""
    if _v2(root):
        return
    for d in node_dirs(names, node, root)[0].glob("slice.*"):
        _rmdir(d)


def _rmdir(d: Path) -> None:
    for _ in range(50):
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)  # killed tasks take a moment to leave


def procs_files(names: Names, node: str, root: Path = CGROUP_ROOT) -> list[str]:
    return [str(d / "cgroup.procs") for d in node_dirs(names, node, root) if d.exists()]


def pids(names: Names, root: Path = CGROUP_ROOT) -> set[int]:
    """Every process in any of this testbed's cgroups."""
    out: set[int] = set()
    for top in node_dirs(names, None, root):
        if top.exists():
            for procs in top.rglob("cgroup.procs"):
                with contextlib.suppress(OSError, ValueError):
                    out |= {int(x) for x in procs.read_text().split()}
    return out


def oom_kills(names: Names, node: str, root: Path = CGROUP_ROOT) -> int:
    """How many processes the kernel's OOM killer killed in the node's memory cgroup and the
    cgroups below it (a container's own); v1 counts each kill only where the victim was, v2's
    memory.events counts the whole subtree."""
    if _v2(root):
        with contextlib.suppress(OSError, ValueError):
            for line in (root / _sub(names, node) / "memory.events").read_text().splitlines():
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
        return 0
    total = 0
    top = node_dirs(names, node, root)[1]
    for f in [top / "memory.oom_control", *top.glob("*/memory.oom_control")]:
        with contextlib.suppress(OSError):
            for line in f.read_text().splitlines():
                if line.startswith("oom_kill "):
                    total += int(line.split()[1])
    return total


def kill_all(pids_: set[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids_:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def remove(names: Names, root: Path = CGROUP_ROOT) -> None:
    """Remove the testbed's cgroup directories, deepest first (they must be empty); on v1 in
    every hierarchy: Docker makes testbed/<name>/<node> parents in all of them."""
    if _v2(root):
        tops = [root / "testbed" / names.testbed]
    else:
        tops = [h / "testbed" / names.testbed for h in root.iterdir()
                if (h / "testbed" / names.testbed).is_dir() and not h.is_symlink()]
    for top in tops:
        if not top.exists():
            continue
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for d in [*dirs, top]:
            _rmdir(d)
    for top in tops:
        parent = top.parent
        with contextlib.suppress(OSError):
            if parent.name == "testbed":
                parent.rmdir()  # only succeeds when no other testbed uses it


def usage(names: Names, node: str, root: Path = CGROUP_ROOT) -> tuple[float, int]:
    """(CPU seconds used so far, memory bytes in use) of the node's cgroups."""
    cpu_s, mem = 0.0, 0
    if _v2(root):
        d = root / _sub(names, node)
        with contextlib.suppress(OSError, ValueError):
            for line in (d / "cpu.stat").read_text().splitlines():
                if line.startswith("usage_usec "):
                    cpu_s = int(line.split()[1]) / 1e6
        with contextlib.suppress(OSError, ValueError):
            mem = int((d / "memory.current").read_text())
        return cpu_s, mem
    dirs = node_dirs(names, node, root)
    with contextlib.suppress(OSError, ValueError):
        cpu_s = int((dirs[3] / "cpuacct.usage").read_text()) / 1e9
    with contextlib.suppress(OSError, ValueError):
        mem = int((dirs[1] / "memory.usage_in_bytes").read_text())
    return cpu_s, mem
