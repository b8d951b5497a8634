"""A testbed's life and the processes in its nodes: up, down, status, node limits, and
commands run inside host, docker and device nodes. The runner, campaigns and measurements
build on this; `testbed.api` re-exports it for users. It never prints; progress goes through a
callback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from testbed.errors import InputError, NotRunningError, TestbedError
from testbed.naming import NETNS_DIR, TESTBED_NAME_RULE, is_testbed_name
from testbed.net import build, cgroups, containers, netns
from testbed.net.cleanup import teardown
from testbed.net.ledger import Ledger, known_testbeds
from testbed.topology import Topology, load

Progress = Callable[[str], None]


def load_topology(path: str | Path, name: str | None = None) -> Topology:
    topo = load(path)
    if name:
        if not is_testbed_name(name):
            raise InputError(f"--name {name!r}: {TESTBED_NAME_RULE}")
        topo = Topology(name=name, nodes=topo.nodes, links=topo.links, source=topo.source)
    return topo


def up(path: str | Path, name: str | None = None, progress: Progress = lambda s: None,
       accept_new_host_keys: bool = False) -> Ledger:
    """Bring a topology up; if it is up but its controller died, restart the controller.
    `accept_new_host_keys`: trust (and save) devices' unknown SSH host keys."""
    topo = load_topology(path, name)
    ledger = Ledger.load(topo.name)
    if ledger and ledger.phase == "up" and build.ensure_controller(ledger):
        progress("the controller was dead or stuck: restarted it")
        return ledger
    return build.up(topo, progress, accept_new_host_keys)  # refuses a healthy running one


def resolve(name: str | None) -> Ledger:
    """The ledger of testbed `name`, or of the only one up when no name is given."""
    if name is None:
        running = known_testbeds()
        if not running:
            raise NotRunningError("no testbed is up; start one with `testbed up FILE`")
        if len(running) > 1:
            raise InputError(f"several testbeds are up ({', '.join(running)}); pass --name")
        name = running[0]
    ledger = Ledger.load(name)
    if ledger is None:
        raise NotRunningError(f"no testbed named {name!r} is up")
    return ledger


def down(name: str | None = None) -> list[str]:
    if name is None:
        running = known_testbeds()
        if len(running) > 1:
            raise InputError(f"several testbeds are up ({', '.join(running)}); pass --name")
        if not running:
            return []
        name = running[0]
    return teardown(name)


def down_all() -> dict[str, list[str]]:
    return {name: teardown(name) for name in known_testbeds()}


def status(name: str | None = None) -> dict:
    ledger = resolve(name)
    names = ledger.names
    out = dict(ledger.topology)
    out["phase"] = ledger.phase
    alive = bool(ledger.controller and ledger.controller.alive())
    health = build.controller_health(ledger) if alive else None
    out["controller"] = {"pid": ledger.controller.pid if ledger.controller else None,
                         "running": alive, "api": str(names.api_socket),
                         "switches_ready": health["ready"] if health else 0,
                         "flows": health["flows"] if health else 0,
                         "links_down": health.get("links_down", []) if health else []}
    states = build.link_states(ledger)
    for i, link in enumerate(out["links"]):
        link["state"] = states.get(i, "missing")
        link["interfaces"] = [names.link_port(i, 0), names.link_port(i, 1)]
    boxes = containers.states(ledger.name) if any(
        i["kind"] == "docker" for i in out["nodes"].values()) else {}
    for node, info in out["nodes"].items():
        info["netns"] = names.netns(node)
        info["present"] = (NETNS_DIR / names.netns(node)).exists()
        info["oom_kills"] = cgroups.oom_kills(names, node)
        if info["kind"] != "device":
            info["applied"] = cgroups.limits(names, node)  # read back from the kernel
        if info["kind"] == "docker":
            info["container"] = boxes.get(node, {"status": "missing"})
            info["present"] = info["present"] and info["container"]["status"] == "running"
        if info["kind"] == "device":
            info["device"] = _device_state(ledger, node)
            info["present"] = info["device"]["tunnel"] == "up"
    return out


def _device_state(ledger: Ledger, node: str) -> dict:
    """Whether the device answers over SSH now, and its end of the tunnel."""
    from testbed.devices.attach import tunnel_state
    from testbed.devices.ssh import Endpoint, Session

    att = ledger.extra.get("devices", {}).get(node)
    ssh = ledger.topology["nodes"][node]["ssh"]
    try:
        with Session(Endpoint.of(node, ssh), retry_for_s=0) as s:
            tunnel = tunnel_state(s, att["iface"]) if att else "missing"
        return {"reachable": True, "tunnel": tunnel, "host": ssh["host"]}
    except TestbedError as e:
        return {"reachable": False, "tunnel": "unknown", "host": ssh["host"], "error": str(e)}


def set_node(name: str | None, node: str, cpu: float | None = None,
             memory_mb: int | None = None) -> dict:
    """Change a running node's CPU and memory limits; returns the node's new settings."""
    ledger = resolve(name)
    info = _node_info(ledger, node)
    cores = os.cpu_count() or 1
    if cpu is not None and not 0 < cpu <= cores:
        raise InputError(f"--cpu {cpu:g}: give more than 0 and at most {cores} (host cores)")
    if memory_mb is not None and memory_mb < 64:
        raise InputError(f"--memory {memory_mb} MB is too little; give at least 64 MB")
    # A child's CPU quota may not exceed its parent's: a container's limits (the child) are
    # raised after its node cgroup's and lowered before them.
    steps = [lambda: cgroups.set_limits(ledger.names, node, cpu, memory_mb)]
    if info["kind"] == "docker":
        child = [lambda: containers.update(ledger.names, node, cpu, memory_mb)]
        steps = steps + child if cpu is None or cpu >= (info["cpu"] or cores) else child + steps
    try:
        for step in steps:
            step()
    except TestbedError:
        raise
    except OSError as e:  # also the engine's refusals (requests' errors are OSErrors)
        why = getattr(e, "explanation", None) or e.strerror or e
        raise InputError(f"node {node}: the new limits were refused ({why}); a memory limit "
                         "must exceed what the node uses now") from None
    if cpu is not None:
        info["cpu"] = cpu
    if memory_mb is not None:
        info["memory_mb"] = memory_mb
    ledger.save()
    return info


def _node_info(ledger: Ledger, node: str) -> dict:
    if node not in ledger.topology["nodes"]:
        nodes = ", ".join(ledger.topology["nodes"])
        raise InputError(f"no node {node!r} in testbed {ledger.name} (nodes: {nodes})")
    return ledger.topology["nodes"][node]


UNPRIVILEGED_UID = 65534  # nobody
DROP_PRIVILEGES = ["setpriv", f"--reuid={UNPRIVILEGED_UID}", f"--regid={UNPRIVILEGED_UID}",
                   "--clear-groups", "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all",
                   "--"]


def in_node(ledger: Ledger, node: str, argv: list[str], tie_to_parent: bool = True,
            unprivileged: bool = False) -> tuple[list[str], Callable[[], None]]:
    """The command line and the preexec function that run `argv` inside `node`: a host node's
    cgroups and network namespace, or a docker node's container (cgroups and namespaces).
    `unprivileged`: as user nobody with every capability dropped (host and docker nodes), so
    the command cannot reach the Docker socket, OVSDB, the testbed's state or other nodes."""
    names = ledger.names
    info = _node_info(ledger, node)
    if unprivileged:
        if info["kind"] == "device":
            raise InputError(f"node {node} is a device: commands run as its SSH user there; "
                             "--unprivileged is for host and docker nodes")
        argv = [*DROP_PRIVILEGES, *argv]
    if info["kind"] == "docker":
        pid = containers.init_pid(names, node)
        return containers.command(pid, argv, tie_to_parent), containers.joining_cgroups(pid)
    if info["kind"] == "device":  # over SSH, through a local relay process
        from testbed.devices.remote import local_argv

        deploy = ledger.extra["devices"][node]["deploy_dir"]
        return local_argv(info["ssh"], node, argv, cwd=deploy), lambda: None
    path = str(NETNS_DIR / names.netns(node))
    cg_files = cgroups.procs_files(names, node)

    def enter() -> None:
        for f in cg_files:
            with open(f, "w") as fh:
                fh.write(str(os.getpid()))
        fd = os.open(path, os.O_RDONLY)
        netns.setns_process(fd)
        os.close(fd)

    return argv, enter


def workload_command(ledger: Ledger, node: str, program: str) -> tuple[list[str], dict]:
    """argv prefix and environment that run workloads/`program` in `node`: this checkout's
    Python for host nodes, the image's Python and its copy of workloads/ for docker nodes, the
    device's Python and the deployed copy for devices."""
    from testbed.images import WORKLOAD_DIR, WORKLOADS

    kind = _node_info(ledger, node)["kind"]
    if kind == "docker":
        return ["python3", f"{WORKLOAD_DIR}/{program}"], {"PYTHONPATH": WORKLOAD_DIR,
                                                          "PATH": "/usr/local/bin:/usr/bin:/bin"}
    if kind == "device":  # the copy deployed by `up` (its directory is on the script's path)
        code = ledger.extra["devices"][node]["deploy_dir"] + "/workloads"
        return ["python3", f"{code}/{program}"], {}
    return [sys.executable, str(WORKLOADS / program)], {"PYTHONPATH": str(WORKLOADS)}


def exec_in_node(name: str | None, node: str, argv: list[str],
                 unprivileged: bool = False) -> None:
    """Replace this process with `argv` running inside the node."""
    ledger = resolve(name)
    if not argv:
        raise InputError("no command given; write `testbed exec NODE -- CMD ARGS...`")
    full, enter = in_node(ledger, node, argv, tie_to_parent=False, unprivileged=unprivileged)
    enter()
    try:
        os.execvp(full[0], full)
    except FileNotFoundError:
        raise InputError(f"command not found in node {node}: {argv[0]}") from None


def popen(name: str | None, node: str, argv: list[str], unprivileged: bool = False,
          **kwargs) -> subprocess.Popen:
    """Start `argv` inside a node as a child of this process (so it can be waited and killed)."""
    full, enter = in_node(resolve(name), node, argv, unprivileged=unprivileged)
    return subprocess.Popen(full, preexec_fn=enter, **kwargs)  # noqa: PLW1509


def run(name: str | None, node: str, argv: list[str], timeout: float | None = None,
        env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `argv` inside a node to completion, capturing its output as text."""
    proc = popen(name, node, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                 env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)
