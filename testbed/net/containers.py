"""Docker containers as nodes.

Each docker node is a container started with no network (`--network none`), inside the node's
cgroup (`--cgroup-parent testbed/<testbed>/<node>`, so the node's CPU and memory limits bind it
like a host node), labelled with the testbed's name. Its network namespace is then bind-mounted
as /run/netns/tb-<testbed>-<node>: from there on links, addresses, shaping, routing and reachability
treat it exactly like a host node. Containers start concurrently (one thread each, bounded).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from testbed.errors import CapabilityError, NetworkError
from testbed.images import client
from testbed.naming import CONTAINER_LABEL, Names
from testbed.net import netns
from testbed.net.cgroups import MB, cpu_limits
from testbed.topology.model import Node

NODE_LABEL = "org.edge-testbed.node"
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
START_WORKERS = 16


def container_name(names: Names, node: str) -> str:
    return names.netns(node)  # tb-<testbed>-<node>, also a valid container name


def start(names: Names, nodes: list[Node], share: dict[str, Path],
          hosts: dict[str, str] | None = None) -> dict[str, int]:
    """Start one container per node concurrently; returns node -> pid of its first process.

    `share[node]` is a host directory mounted at the same path inside the container, through
    which the runner hands task configurations in and gets traces back. `hosts` (name -> ip)
    go into each container's /etc/hosts. Containers get a terminal and an open stdin, so an
    image whose command is a shell (debian, ubuntu, alpine: CMD bash/sh) keeps running, as
    Containernet's do; the node's `cmd`, `env`, `volumes`, `privileged`, `cap_add` apply.
    """
    docker = client()
    from testbed.net.probe import probe

    systemd = probe().docker_cgroup_driver == "systemd"

    def one(n: Node) -> tuple[str, int]:
        limits = {}
        if n.cpu is not None:
            quota, period = cpu_limits(n.cpu)
            limits.update(cpu_period=period, cpu_quota=quota)
        if n.memory_mb is not None:
            limits.update(mem_limit=n.memory_mb * MB, memswap_limit=n.memory_mb * MB)
        extra = n.container or {}
        volumes = {str(share[n.name]): {"bind": str(share[n.name]), "mode": "rw"}}
        for bind in extra.get("volumes", []):
            host, inside, *mode = bind.split(":")
            volumes[host] = {"bind": inside, "mode": mode[0] if mode else "rw"}
        c = docker.containers.run(
            n.image, command=extra.get("cmd"), name=container_name(names, n.name),
            hostname=n.name, detach=True, tty=True, stdin_open=True,
            network_mode="none", labels={CONTAINER_LABEL: names.testbed, NODE_LABEL: n.name},
            # cgroupfs driver: inside the node's cgroup (its limits bind the container too);
            # systemd driver: a slice (a path is refused), the limits are the container's own
            cgroup_parent="testbed.slice" if systemd else f"/testbed/{names.testbed}/{n.name}",
            volumes=volumes, environment=extra.get("env") or None,
            privileged=bool(extra.get("privileged")), cap_add=extra.get("cap_add") or None,
            extra_hosts={h: ip for h, ip in (hosts or {}).items() if h != n.name} or None,
            **limits)
        c.reload()
        pid = c.attrs["State"]["Pid"]
        try:
            if not pid:
                raise NetworkError("no process")
            netns.attach(names.netns(n.name), pid)
        except NetworkError:
            raise NetworkError(_exited(c, n)) from None
        return n.name, pid

    with ThreadPoolExecutor(min(START_WORKERS, max(1, len(nodes)))) as pool:
        return dict(pool.map(one, nodes))


def confirm_running(names: Names, nodes: list[Node]) -> None:
    """A command such as `echo hi; exit 3` may still be running when `start` attaches the
    network; by the end of `up` it has ended, and `up` must fail rather than report it up."""
    docker = client()
    for n in nodes:
        c = docker.containers.get(container_name(names, n.name))
        if c.status != "running":
            raise NetworkError(_exited(c, n))


def _exited(c, n: Node) -> str:
    """Why a container did not stay up: its exit code and last log lines."""
    with contextlib.suppress(Exception):
        c.wait(timeout=5)
    c.reload()
    state = c.attrs["State"]
    logs = c.logs(tail=10).decode(errors="replace").strip() or "(it printed nothing)"
    cmd = c.attrs["Config"].get("Cmd") or c.attrs["Config"].get("Entrypoint")
    return (f"the container of node {n.name} ({n.image}) exited at once with code "
            f"{state.get('ExitCode')}{' (' + state['Error'] + ')' if state.get('Error') else ''}"
            f"; its command {cmd} ended. Last lines:\n{logs}\nfix: give the node a command that "
            "keeps running, e.g. cmd: [sleep, infinity]")


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
        quota, period = cpu_limits(cpu)
        args.update(cpu_period=period, cpu_quota=quota)
    if memory_mb is not None:
        args.update(mem_limit=memory_mb * MB, memswap_limit=memory_mb * MB)
    if args:
        c.update(**args)


def detached(names: Names, node: str) -> bool:
    """True when the container runs in another network namespace than the one wired into the
    fabric (it was restarted behind the testbed's back: only `lo` is left inside)."""
    try:
        pid = init_pid(names, node)
        return os.stat(f"/proc/{pid}/ns/net").st_ino != os.stat(
            netns.NETNS_DIR / names.netns(node)).st_ino
    except (NetworkError, OSError):
        return False


def reconnect(names: Names, node: str) -> None:
    """Wire a restarted container back in: its port moves from the old namespace into the
    container's new one, which then takes the node's namespace name."""
    pid = init_pid(names, node)
    name = names.netns(node)
    with netns.netlink(name) as ip:
        found = ip.link_lookup(ifname="eth0")
        if not found:
            raise NetworkError(f"node {node}: its port is gone; run `testbed down` and `up`")
        ip.link("set", index=found[0], net_ns_pid=pid)
    netns.remove(name)
    netns.attach(name, pid)


def environment(names: Names, node: str) -> dict[str, str]:
    """The container's own environment (image ENV and the node's env:), as `docker exec`
    gives its commands."""
    c = client().containers.get(container_name(names, node))
    pairs = (e.partition("=") for e in c.attrs["Config"].get("Env") or [])
    return {k: v for k, _, v in pairs}


def kill(names: Names, node: str) -> int:
    """SIGKILL the container (a crash); 1 if it was running."""
    c = client().containers.get(container_name(names, node))
    if c.status != "running":
        return 0
    c.kill()
    c.wait(timeout=30)
    return 1


def start_again(names: Names, node: str) -> None:
    """Start a killed container again (a new network namespace: see `reconnect`)."""
    c = client().containers.get(container_name(names, node))
    c.start()
    c.reload()
    if c.status != "running":
        raise NetworkError(f"the container of node {node} did not start again: "
                           f"{c.logs(tail=5).decode(errors='replace')}")


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


def has_setpriv(pid: int) -> bool:
    """Whether the container's file system has setpriv (stock busybox/alpine images lack it)."""
    return any(os.path.exists(f"/proc/{pid}/root{d}/setpriv")
               for d in ("/usr/bin", "/bin", "/usr/sbin", "/sbin"))


def command(pid: int, argv: list[str], tie_to_parent: bool = True) -> list[str]:
    """`argv` run in container `pid`'s namespaces, pid namespace included, in its working
    directory, the way `docker exec` would. Unlike `docker exec`, the process is a descendant of
    the caller: killing the returned command kills it too (parent-death signal), so runs and
    tests can stop what they started. In an image without setpriv the command keeps the host's
    pid namespace (nsenter then execs it directly, and the signal set before is kept)."""
    enter = ["nsenter", f"--target={pid}", "--mount", "--uts", "--ipc", "--net", "--wd"]
    if not tie_to_parent:
        return [*enter, "--pid", "--", *argv]
    if has_setpriv(pid):
        return [*enter, "--pid", "--", "setpriv", "--pdeathsig", "KILL", "--", *argv]
    return [*enter, "--", *argv]


def joining_cgroups(pid: int, pdeathsig: bool = False):
    """A preexec function that puts a forked child into container `pid`'s cgroups (limits and
    accounting then cover it; its children inherit them), and with `pdeathsig` has it killed
    when its parent dies."""
    files = cgroup_files(pid)

    def join() -> None:
        for f in files:
            with open(f, "w") as fh:
                fh.write(str(os.getpid()))
        if pdeathsig:
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    return join


def _engine_socket_exists() -> bool:
    host = os.environ.get("DOCKER_HOST", "")
    return bool(host and not host.startswith("unix://")) or Path(
        host.removeprefix("unix://") or "/var/run/docker.sock").exists()
