"""A testbed's life and the processes in its nodes: up, down, status, node limits, and
commands run inside host, docker and device nodes. The runner, campaigns and measurements
build on this; `testbed.api` re-exports it for users. It never prints; progress goes through a
callback.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from testbed import build, nodes
from testbed.cleanup import teardown
from testbed.errors import InputError, NotRunningError, TestbedError
from testbed.naming import TESTBED_NAME_RULE, is_testbed_name
from testbed.net import shards
from testbed.net.controller import controller_health, ensure_controller
from testbed.net.ledger import Ledger, known_testbeds
from testbed.net.links import link_states
from testbed.nodes.base import DROP_PRIVILEGES, UNPRIVILEGED_UID  # noqa: F401 (re-exported)
from testbed.topology import Topology, load

Progress = Callable[[str], None]


def load_topology(path: str | Path, name: str | None = None) -> Topology:
    topo = load(path)
    if name:
        if not is_testbed_name(name):
            raise InputError(f"--name {name!r}: {TESTBED_NAME_RULE}")
        topo = dataclasses.replace(topo, name=name)
    return topo


def up(path: str | Path, name: str | None = None, progress: Progress = lambda s: None,
       accept_new_host_keys: bool = False, cluster: str | None = None) -> Ledger:
    """Bring a topology up; if it is up but its controller died, restart the controller.
    `accept_new_host_keys`: trust (and save) devices' unknown SSH host keys; `cluster`: the
    Ray cluster whose hosts build a split topology's parts."""
    topo = load_topology(path, name)
    ledger = Ledger.load(topo.name)
    if ledger and ledger.phase == "up" and ensure_controller(ledger):
        progress("the controller was dead or stuck: restarted it")
        return ledger
    return build.up(topo, progress, accept_new_host_keys, cluster)  # refuses a running one


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


def down(name: str | None = None, force: bool = False) -> list[str]:
    if name is None:
        running = known_testbeds()
        if len(running) > 1:
            raise InputError(f"several testbeds are up ({', '.join(running)}); pass --name")
        if not running:
            return []
        name = running[0]
    ledger = Ledger.load(name)
    parts = []
    if ledger and ledger.extra.get("cluster"):  # a split topology: every host removes its part
        from testbed import hosted

        topo = Topology.from_dict(ledger.topology)
        try:
            parts = hosted.remove_parts(name, topo, ledger.extra["cluster"])
        except TestbedError as e:
            parts = [f"the cluster did not answer ({e}); parts on other hosts may be left"]
    return parts + teardown(name, force)


def down_all() -> dict[str, list[str]]:
    return {name: teardown(name) for name in known_testbeds()}


def testbeds() -> list[dict]:
    """Every testbed this host holds state for, in brief (what `status` needs a name for)."""
    out = []
    for name in known_testbeds():
        ledger = Ledger.load(name)
        if ledger is None:  # removed between the listing and the read
            continue
        out.append({"name": name, "phase": ledger.phase,
                    "nodes": len(ledger.topology.get("nodes", {})),
                    "links": len(ledger.topology.get("links", [])),
                    "controller_running": bool(ledger.controller and ledger.controller.alive()),
                    "topology_file": ledger.topology_file})
    return out


def status(name: str | None = None) -> dict:
    ledger = resolve(name)
    names = ledger.names
    out = dict(ledger.topology)
    out["phase"] = ledger.phase
    if ledger.extra.get("cluster"):  # each host reports its own part, through Ray
        from testbed import hosted

        ports, node_states, daemons_cpu = hosted.status_on_hosts(ledger)
    else:
        ports, node_states, daemons_cpu = None, None, shards.cpu_seconds(names)
    out["fabric"] = {**ledger.extra.get("fabric", {}),  # proof and idle latency at `up`
                     "switch_daemons": ledger.extra.get("switch_daemons", 1),
                     "switch_daemons_cpu_s": round(daemons_cpu, 2)}
    alive = bool(ledger.controller and ledger.controller.alive())
    health = controller_health(ledger) if alive else None
    out["controller"] = {"pid": ledger.controller.pid if ledger.controller else None,
                         "running": alive, "api": str(names.api_socket),
                         "switches_ready": health["ready"] if health else 0,
                         "flows": health["flows"] if health else 0,
                         "links_down": health.get("links_down", []) if health else [],
                         # where the hosts of a split topology reach it (OpenFlow over TLS)
                         **({"tls_port": tls} if (tls := ledger.extra.get(
                             "controller_tls_port")) else {})}
    states = link_states(ledger, ports)
    for i, link in enumerate(out["links"]):
        link["state"] = states.get(i, "missing")
        link["interfaces"] = [names.link_port(i, 0), names.link_port(i, 1)]
    by_kind: dict[str, list[str]] = {}
    for node, info in out["nodes"].items():
        info["netns"] = names.netns(node)
        by_kind.setdefault(info["kind"], []).append(node)
    if node_states is None:
        node_states = {}
        for kind, members in by_kind.items():
            node_states.update(nodes.of(kind).status(ledger, members))
    for node, state in node_states.items():
        out["nodes"][node].update(state)
    for node in ledger.extra.get("stopped", {}):  # crashed by `node stop` or a timeline
        out["nodes"][node]["stopped"] = True
    return out


def check(name: str | None = None, all_pairs: bool = False,
          progress: Progress = lambda s: None) -> dict:
    """Prove the running network again (sample or all pairs) and re-measure its latency;
    the result replaces what `up` recorded. Raises NetworkError naming unreachable pairs."""
    ledger = resolve(name)
    topo = Topology.from_dict(ledger.topology, ledger.topology_file)
    fabric = {**build.prove(topo, ledger.names, all_pairs, progress,
                            ledger.extra.get("cluster")),
              "switch_daemons": ledger.extra.get("switch_daemons", 1)}
    ledger.extra["fabric"] = fabric
    ledger.save()
    return fabric


def reconnect(name: str | None, node: str) -> dict:
    """Wire a node back into the fabric (a container restarted with `docker restart`), then
    prove the network again. Returns the proof."""
    ledger = resolve(name)
    _node_info(ledger, node)
    topo = Topology.from_dict(ledger.topology, ledger.topology_file)
    n = next(x for x in topo.nodes if x.name == node)
    nodes.of(n.kind).reconnect(ledger, n)
    return check(ledger.name)


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
    try:
        nodes.on_node_host(ledger, node, nodes.of_node(ledger, node).set_limits, ledger, node,
                           cpu, memory_mb, info["cpu"])
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
    nodes.of_node(ledger, node)  # an InputError naming the nodes if there is no such node
    return ledger.topology["nodes"][node]


def in_node(ledger: Ledger, node: str, argv: list[str], tie_to_parent: bool = True,
            unprivileged: bool = False) -> tuple[list[str], Callable[[], None]]:
    """The command line and the preexec function that run `argv` inside `node`: a host node's
    cgroups and network namespace, a docker node's container, a device over SSH.
    `unprivileged`: as user nobody with every capability dropped (host and docker nodes), so
    the command cannot reach the Docker socket, OVSDB, the testbed's state or other nodes."""
    return nodes.of_node(ledger, node).command(ledger, node, argv, tie_to_parent, unprivileged)


def workload_command(ledger: Ledger, node: str, program: str) -> tuple[list[str], dict]:
    """argv prefix and environment that run workloads/`program` in `node`: this checkout's
    Python for host nodes, the image's Python and its copy of workloads/ for docker nodes, the
    device's Python and the deployed copy for devices."""
    return nodes.of_node(ledger, node).workload_command(ledger, node, program)


def on_cluster_host(ledger: Ledger, node: str) -> bool:
    """Whether `node` belongs to a host part built through a Ray cluster (so commands in it
    go through that host's Ray node: the host may be another machine)."""
    _node_info(ledger, node)
    return nodes.cluster_host(ledger, node) is not None


def exec_in_node(name: str | None, node: str, argv: list[str],
                 unprivileged: bool = False) -> None:
    """Replace this process with `argv` running inside the node."""
    ledger = resolve(name)
    if not argv:
        raise InputError("no command given; write `testbed exec NODE -- CMD ARGS...`")
    if on_cluster_host(ledger, node):  # run by the node's host; output and exit code back
        from testbed import hosted

        code, out, err = hosted.exec_on_host(ledger, node, argv, unprivileged)
        os.write(1, out)
        os.write(2, err)
        raise SystemExit(code)
    full, enter = in_node(ledger, node, argv, tie_to_parent=False, unprivileged=unprivileged)
    for k, v in nodes.of_node(ledger, node).environment(ledger, node).items():
        os.environ.setdefault(k, v)  # the caller's variables win, as with docker exec -e
    enter()
    try:
        os.execvp(full[0], full)
    except FileNotFoundError:
        raise InputError(f"command not found in node {node}: {argv[0]}") from None


def popen(name: str | None, node: str, argv: list[str], unprivileged: bool = False,
          **kwargs) -> subprocess.Popen:
    """Start `argv` inside a node as a child of this process (so it can be waited and killed).
    The node's own environment (a container's ENV) is added under the caller's. Not for a node
    on a host of a cluster (another machine, maybe): run_in_node, exec and runs work there."""
    ledger = resolve(name)
    if on_cluster_host(ledger, node):
        raise InputError(f"node {node} is on host {ledger.topology['nodes'][node]['host']} "
                         "of a cluster: it cannot be a child of this process; use run_in_node "
                         "(output and exit code back at its end) or `testbed run`")
    return popen_in(ledger, node, argv, unprivileged, **kwargs)


def popen_in(ledger: Ledger, node: str, argv: list[str], unprivileged: bool = False,
             **kwargs) -> subprocess.Popen:
    """popen for a testbed given by its ledger (which a cluster host has no file of)."""
    full, enter = in_node(ledger, node, argv, unprivileged=unprivileged)
    own = nodes.of_node(ledger, node).environment(ledger, node)
    if own:
        kwargs["env"] = {**own, **(kwargs.get("env") or os.environ)}
    return subprocess.Popen(full, preexec_fn=enter, **kwargs)  # noqa: PLW1509


def run_in_node(name: str | None, node: str, argv: list[str], timeout: float | None = None,
                env: dict | None = None) -> subprocess.CompletedProcess:
    """Run one command inside a node to completion, capturing its output as text (not an
    experiment: that is `api.experiment`); on the node's host for a topology built through
    a cluster."""
    ledger = resolve(name)
    if on_cluster_host(ledger, node):
        if env:
            raise InputError(f"node {node} is on a host of the cluster: its commands run "
                             "with the node's own environment there")
        return _on_host(ledger, node, argv, timeout)
    proc = popen(name, node, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                 env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def run_workload(ledger: Ledger, node: str, program: str, args: list[str],
                 timeout: float | None = None) -> subprocess.CompletedProcess:
    """workloads/`program` with `args` run to completion in `node`, output as text: with this
    checkout's programs, or with its host's own for a node on a host of a cluster."""
    if on_cluster_host(ledger, node):
        return _on_host(ledger, node, args, timeout, program)
    argv, env = workload_command(ledger, node, program)
    return run_in_node(ledger.name, node, [*argv, *args], timeout, env={**os.environ, **env})


def run_workload_each(ledger: Ledger, members: list[str], program: str, args: list[str],
                      timeout: float | None = None) -> dict[str, subprocess.CompletedProcess]:
    """run_workload in each of `members`, one after another, except that the hosts of a
    cluster run theirs at the same time (their nodes share no cores)."""
    by_host: dict[str, list[str]] = {}
    for node in members:
        if on_cluster_host(ledger, node):
            by_host.setdefault(ledger.topology["nodes"][node]["host"], []).append(node)
    out = {}
    if by_host:
        from testbed import hosted

        for node, (code, said, err) in hosted.workload_on_hosts(ledger, by_host, program, args,
                                                                 timeout).items():
            out[node] = subprocess.CompletedProcess(args, code, said.decode(errors="replace"),
                                                    err.decode(errors="replace"))
    for node in members:
        if node not in out:
            out[node] = run_workload(ledger, node, program, args, timeout)
    return {n: out[n] for n in members}


def _on_host(ledger: Ledger, node: str, argv: list[str], timeout: float | None,
             program: str | None = None) -> subprocess.CompletedProcess:
    from testbed import hosted

    code, out, err = hosted.exec_on_host(ledger, node, argv, timeout_s=timeout, program=program)
    if code == 124 and timeout is not None:
        raise subprocess.TimeoutExpired(argv, timeout)
    return subprocess.CompletedProcess(argv, code, out.decode(errors="replace"),
                                       err.decode(errors="replace"))


def link_interface(name: str | None, a: str, b: str, side: str | None = None) -> str:
    """The interface of link a-b on `side`'s end (default a): every packet crossing the link,
    transit traffic included, passes it (it sits in the host namespace, next to the switch)."""
    ledger = resolve(name)
    side = side or a
    if side not in (a, b):
        raise InputError(f"--node-side {side!r}: give {a} or {b}, an end of the link")
    for i, link in enumerate(ledger.topology["links"]):
        ends = list(link["between"])
        if sorted(ends) == sorted([a, b]):
            return ledger.names.link_port(i, ends.index(side))
    known = ", ".join("-".join(lk["between"]) for lk in ledger.topology["links"][:20])
    raise InputError(f"no link between {a} and {b} in {ledger.name} (links: {known})")
