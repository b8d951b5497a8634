"""Docker containers as nodes.

Each docker node is a container started with no network (`--network none`), inside the node's
cgroup (`--cgroup-parent testbed/<testbed>/<node>`, so the node's CPU and memory limits bind it
like a host node), labelled with the testbed's name. Its network namespace is then bind-mounted
as /run/netns/tb-<testbed>-<node>: from there on links, addresses, shaping, routing and reachability
treat it exactly like a host node. Containers start concurrently (one thread each, bounded).
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from testbed.errors import CapabilityError, NetworkError
from testbed.images import client
from testbed.naming import CONTAINER_LABEL, Names
from testbed.net import netns
from testbed.net.cgroups import CFS_PERIOD_US
from testbed.topology.model import Node

NODE_LABEL = "org.edge-testbed.node"
START_WORKERS = 16


def container_name(names: Names, node: str) -> str:
    return names.netns(node)  # tb-<testbed>-<node>, also a valid container name


def start(names: Names, nodes: list[Node], share: dict[str, Path]) -> dict[str, int]:
    """Start one container per node concurrently; returns node -> pid of its first process.

    `share[node]` is a host directory mounted at the same path inside the container, through
    which the runner hands task configurations in and gets traces back.
    """
    docker = client()
    from testbed.net.probe import probe

    systemd = probe().docker_cgroup_driver == "systemd"

    def one(n: Node) -> tuple[str, int]:
        limits = {}
        if n.cpu is not None:
            limits.update(cpu_period=CFS_PERIOD_US, cpu_quota=int(n.cpu * CFS_PERIOD_US))
        if n.memory_mb is not None:
            limits.update(mem_limit=n.memory_mb * 2**20, memswap_limit=n.memory_mb * 2**20)
        c = docker.containers.run(
            n.image, name=container_name(names, n.name), hostname=n.name, detach=True,
            network_mode="none", labels={CONTAINER_LABEL: names.testbed, NODE_LABEL: n.name},
            # cgroupfs driver: inside the node's cgroup (its limits bind the container too);
            # systemd driver: a slice (a path is refused), the limits are the container's own
            cgroup_parent="testbed.slice" if systemd else f"/testbed/{names.testbed}/{n.name}",
            volumes={str(share[n.name]): {"bind": str(share[n.name]), "mode": "rw"}},
            **limits)
        c.reload()
        pid = c.attrs["State"]["Pid"]
        if not pid:
            raise NetworkError(f"container for node {n.name} exited at once: "
                               f"{c.logs(tail=5).decode(errors='replace')}")
        netns.attach(names.netns(n.name), pid)
        return n.name, pid

    with ThreadPoolExecutor(min(START_WORKERS, max(1, len(nodes)))) as pool:
        return dict(pool.map(one, nodes))


def remove_all(testbed: str) -> int:
    """Remove every container labelled with this testbed's name (concurrently)."""
    if not _engine_socket_exists():
        return 0
    try:
        docker = client()
    except CapabilityError:
        return 0
    found = docker.containers.list(all=True, filters={"label": f"{CONTAINER_LABEL}={testbed}"})

    def rm(c) -> None:
        with contextlib.suppress(Exception):  # already gone
            c.remove(force=True, v=True)

    with ThreadPoolExecutor(min(START_WORKERS, max(1, len(found)))) as pool:
        list(pool.map(rm, found))
    return len(found)


def states(testbed: str) -> dict[str, dict]:
    """node -> {id, status, oom_killed} for this testbed's containers."""
    if not _engine_socket_exists():
        return {}
    try:
        docker = client()
    except CapabilityError:  # the engine stopped: containers show as missing
        return {}
    out = {}
    for c in docker.containers.list(all=True,
                                      filters={"label": f"{CONTAINER_LABEL}={testbed}"}):
        out[c.labels.get(NODE_LABEL, c.name)] = {
            "id": c.id[:12], "status": c.status, "image": c.attrs["Config"]["Image"],
            "oom_killed": c.attrs["State"].get("OOMKilled", False)}
    return out


def update(names: Names, node: str, cpu: float | None, memory_mb: int | None) -> None:
    """New CPU/memory limits for a running container (Docker's own record of them too)."""
    c = client().containers.get(container_name(names, node))
    args = {}
    if cpu is not None:
        args.update(cpu_period=CFS_PERIOD_US, cpu_quota=int(cpu * CFS_PERIOD_US))
    if memory_mb is not None:
        args.update(mem_limit=memory_mb * 2**20, memswap_limit=memory_mb * 2**20)
    if args:
        c.update(**args)


def init_pid(names: Names, node: str) -> int:
    c = client().containers.get(container_name(names, node))
    if c.status != "running":
        raise NetworkError(f"the container of node {node} is {c.status}; "
                           f"see `docker logs {c.name}`")
    return c.attrs["State"]["Pid"]


def cgroup_files(pid: int) -> list[str]:
    """cgroup.procs files of every v1 hierarchy process `pid` belongs to."""
    files = []
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if not controllers or controllers.startswith("name="):
            continue
        f = Path("/sys/fs/cgroup") / controllers / path.lstrip("/") / "cgroup.procs"
        if not f.exists():  # co-mounted controllers are mounted under one of their names
            f = Path("/sys/fs/cgroup") / controllers.split(",")[0] / path.lstrip("/") / \
                "cgroup.procs"
        if f.exists():
            files.append(str(f))
    return files


def command(pid: int, argv: list[str], tie_to_parent: bool = True) -> list[str]:
    """`argv` run in container `pid`'s namespaces, pid namespace included, in its working
    directory, the way `docker exec` would. Unlike `docker exec`, the process is a descendant of
    the caller: killing the returned command kills it too (parent-death signal), so runs and
    tests can stop what they started."""
    enter = ["nsenter", f"--target={pid}", "--mount", "--uts", "--ipc", "--net", "--pid", "--wd"]
    tie = ["setpriv", "--pdeathsig", "KILL", "--"] if tie_to_parent else []
    return [*enter, "--", *tie, *argv]


def joining_cgroups(pid: int):
    """A preexec function that puts a forked child into container `pid`'s cgroups (limits and
    accounting then cover it; its children inherit them)."""
    files = cgroup_files(pid)

    def join() -> None:
        for f in files:
            with open(f, "w") as fh:
                fh.write(str(os.getpid()))

    return join


def _engine_socket_exists() -> bool:
    host = os.environ.get("DOCKER_HOST", "")
    return bool(host and not host.startswith("unix://")) or Path(
        host.removeprefix("unix://") or "/var/run/docker.sock").exists()
