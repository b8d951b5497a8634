"""A split topology's parts built and removed on their hosts through Ray (`testbed up FILE
--cluster ADDRESS`): host `a`'s part is built by a Ray task on the cluster node labelled
`testbed-host=a` (`ray start ... --labels testbed-host=a`), so its namespaces, switch daemons,
tunnel ends and shaping are made by a process on that host. The controller, the proof of
reachability and the state file stay with the driver.

Removal goes the same way: `down` asks every host's node to remove what it has of the
testbed (found by names, as after a crash), then removes the driver's part. The state file
records the cluster before any part is built, so `down` also works after the driver was
killed mid-build.

Each host's switches reach the controller over TLS through a relay on that host
(testbed/net/ofrelay.py); the host's certificate travels with its build task.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

import ray

from testbed.errors import InputError, NetworkError
from testbed.naming import Names
from testbed.net.ledger import Ledger
from testbed.net.ofrelay import ControllerLink
from testbed.raycluster import LABEL, alive, call_on_host, check_hosts, connect, on
from testbed.topology.model import Topology


@ray.remote(num_cpus=0, max_retries=0)
def _check(topo: Topology, host: str) -> None:
    from testbed.net import hosts, ovs

    hosts.check(topo, ovs.datapath_type(), only=host)


@ray.remote(num_cpus=0, max_retries=0)
def _build(topo: Topology, host: str, place: dict[str, int], planned: dict[str, dict],
           of_port: int, controller: ControllerLink) -> dict:
    from testbed.parts import build_part

    t0 = time.monotonic()
    build_part(topo, Names(topo.name), host, place, planned, of_port, lambda s: None,
               controller)
    ctx = ray.get_runtime_context()
    return {"host": host, "built_by": ctx.get_node_labels().get(LABEL), "pid": os.getpid(),
            "ray_node": ctx.get_node_id(), "seconds": round(time.monotonic() - t0, 2)}


@ray.remote(num_cpus=0, max_retries=0)
def _remove(testbed: str) -> list[str]:
    from testbed.cleanup import teardown
    from testbed.raycluster import RUN_SCRATCH, sweep_scratch

    sweep_scratch(RUN_SCRATCH)  # files of runs whose driver was killed
    return teardown(testbed)


@ray.remote(num_cpus=0, max_retries=0)
def _status(ledger: Ledger, host: str) -> tuple[dict[str, bool], dict[str, dict], float]:
    from testbed import nodes
    from testbed.net import shards
    from testbed.net.links import port_states

    by_kind: dict[str, list[str]] = {}
    for node, info in ledger.topology["nodes"].items():
        if info.get("host") == host:
            by_kind.setdefault(info["kind"], []).append(node)
    states = {}
    for kind, members in by_kind.items():
        states.update(nodes.of(kind).status(ledger, members))
    return port_states(ledger, host), states, shards.cpu_seconds(ledger.names)


def _exec_here(ledger: Ledger, node: str, argv: list[str], unprivileged: bool,
               timeout_s: float | None, program: str | None) -> tuple[int, bytes, bytes]:
    import subprocess

    from testbed import nodes

    kind = nodes.of_node(ledger, node)
    extra: dict[str, str] = {}
    if program:  # workloads/<program> as this host has it (its checkout, its Python)
        prefix, extra = kind.workload_command(ledger, node, program)
        argv = [*prefix, *argv]
    full, enter = kind.command(ledger, node, argv, True, unprivileged)
    env = {**kind.environment(ledger, node), **os.environ, **extra}
    try:
        res = subprocess.run(full, preexec_fn=enter, capture_output=True, env=env,  # noqa: PLW1509
                             timeout=timeout_s, check=False)
    except FileNotFoundError:
        return 127, b"", f"command not found in node {node}: {argv[0]}\n".encode()
    except subprocess.TimeoutExpired:
        return 124, b"", f"no end within {timeout_s:g} s: stopped\n".encode()
    return res.returncode, res.stdout, res.stderr


@ray.remote(num_cpus=0, max_retries=0)
def _workload_each(ledger: Ledger, members: list[str], program: str, args: list[str],
                   timeout_s: float | None) -> dict[str, tuple[int, bytes, bytes]]:
    return {n: _exec_here(ledger, n, args, False, timeout_s, program) for n in members}


def workload_on_hosts(ledger: Ledger, members: dict[str, list[str]], program: str,
                      args: list[str], timeout_s: float | None,
                      ) -> dict[str, tuple[int, bytes, bytes]]:
    """workloads/`program` with `args` in each host's `members`, one node after another on
    each host and every host at once (e.g. measuring node speeds: nodes of one host would
    share its cores, nodes of two hosts do not); node -> (exit code, stdout, stderr)."""
    live = _labelled(ledger.extra["cluster"])
    missing = [h for h in members if h not in live]
    if missing:
        raise NetworkError(f"host {missing[0]} has no live Ray node labelled {LABEL}={missing[0]}")
    refs = {h: _workload_each.options(scheduling_strategy=on(live[h])).remote(
        ledger, names, program, args, timeout_s) for h, names in members.items()}
    out = {}
    for h, ref in refs.items():
        try:
            out.update(ray.get(ref))
        except ray.exceptions.RayError as e:
            raise NetworkError(f"host {h}: {str(e).splitlines()[-1][:300]}") from None
    return out


@ray.remote(num_cpus=0, max_retries=0)
def _probe(topo: Topology, host: str, pairs: list[tuple[str, str]], latency: bool,
           ) -> tuple[list[tuple[str, str]], dict]:
    from testbed.proof import probe

    return probe(topo, Names(topo.name), pairs, host, latency)


def probe_on_hosts(topo: Topology, pairs: list[tuple[str, str]], cluster: str,
                   ) -> tuple[list[tuple[str, str]], dict]:
    """Every host probes the pairs whose source it holds, at once (its Ray node enters its
    nodes' namespaces); the host with the most nodes also measures the fabric's latency.
    A host without a live Ray node counts all its pairs as unreachable."""
    live = _labelled(cluster)
    count = {h.name: sum(n.host == h.name for n in topo.nodes) for h in topo.hosts}
    timer = max(count, key=lambda h: (count[h], h))
    refs = {h.name: _probe.options(scheduling_strategy=on(live[h.name])).remote(
        topo, h.name, pairs, h.name == timer) for h in topo.hosts if h.name in live}
    missing: list[tuple[str, str]] = []
    latency: dict = {}
    for h in topo.hosts:
        if h.name not in refs:
            missing += [(a, b) for a, b in pairs if topo.node(a).host == h.name]
            continue
        lost, measured = ray.get(refs[h.name], timeout=300)
        missing += [tuple(p) for p in lost]
        latency = latency or measured
    return missing, latency


def _labelled(cluster: str) -> dict[str | None, dict]:
    connect(cluster)
    return {n.get("Labels", {}).get(LABEL): n for n in alive()}


def status_on_hosts(ledger: Ledger) -> tuple[dict[str, bool], dict[str, dict], float]:
    """From every host of a topology built through a cluster, at once: its link ends' states,
    its nodes' statuses and its switch daemons' CPU seconds (a host without a live Ray node
    reports nothing: its links show as missing, its nodes as absent)."""
    topo = Topology.from_dict(ledger.topology)
    live = _labelled(ledger.extra["cluster"])
    refs = [_status.options(scheduling_strategy=on(live[h.name])).remote(ledger, h.name)
            for h in topo.hosts if h.name in live]
    ports: dict[str, bool] = {}
    states: dict[str, dict] = {}
    cpu = 0.0
    for ref in refs:
        with contextlib.suppress(ray.exceptions.RayError):
            p, st, c = ray.get(ref, timeout=60)
            ports.update(p)
            states.update(st)
            cpu += c
    for node in ledger.topology["nodes"]:
        states.setdefault(node, {"present": False, "unreachable_host": True})
    return ports, states, cpu


def exec_on_host(ledger: Ledger, node: str, argv: list[str], unprivileged: bool = False,
                 timeout_s: float | None = None, program: str | None = None,
                 ) -> tuple[int, bytes, bytes]:
    """Run `argv` in `node` by a Ray task on the node's host (after workloads/`program`, as
    that host runs it, if given); (exit code, stdout, stderr)."""
    return call_on_host(ledger.extra["cluster"], ledger.topology["nodes"][node]["host"],
                        _exec_here, ledger, node, argv, unprivileged, timeout_s, program)


def _nodes(topo: Topology) -> dict[str, dict]:
    """Host -> its live Ray node (by label), refusing hosts without one."""
    live = alive()
    out = {}
    for h in topo.hosts:
        node = next((n for n in live if n.get("Labels", {}).get(LABEL) == h.name), None)
        if node is None:
            raise InputError(f"{topo.source}: hosts.{h.name}: no node of the cluster is "
                             f"labelled {LABEL}={h.name}; on that host run as root `ray start "
                             f"--address HEAD:6379 --labels {LABEL}={h.name}`")
        out[h.name] = node
    return out


def check(topo: Topology, cluster: str) -> None:
    """Before anything is built: every host has its Ray node, runs our version, and sees the
    address the file gives it."""
    connect(cluster)
    check_hosts("simulated", None)  # every node runs the driver's version
    where = _nodes(topo)
    refs = [_check.options(scheduling_strategy=on(where[h.name])).remote(topo, h.name)
            for h in topo.hosts]
    for ref in refs:
        try:
            ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            raise e.as_instanceof_cause() from None


def build_parts(topo: Topology, names: Names, place: dict[str, int], planned: dict,
                of_port: int, cluster: str, progress: Callable[[str], None],
                controller: dict[str, ControllerLink]) -> list[dict]:
    """Every host's part built on its host, all at once; what each reported. `controller`:
    how each host's switches reach the controller (its certificate travels with the task)."""
    connect(cluster)
    where = _nodes(topo)
    progress(f"{len(where)} hosts building their parts")
    refs = {h: _build.options(scheduling_strategy=on(node)).remote(
        topo, h, place, planned, of_port, controller[h]) for h, node in where.items()}
    out, failed = [], []
    for h, ref in refs.items():
        try:
            out.append(ray.get(ref))
        except ray.exceptions.RayError as e:
            cause = e.as_instanceof_cause() if isinstance(e, ray.exceptions.RayTaskError) else e
            failed.append(f"host {h}: {str(cause).splitlines()[-1][:300]}")
    if failed:
        raise NetworkError("building the hosts' parts failed: " + "; ".join(failed))
    return out


def remove_parts(testbed: str, topo: Topology, cluster: str) -> list[str]:
    """Ask every host's node to remove what it has of `testbed` (one host after another:
    several may share a machine); what each removed."""
    labelled = _labelled(cluster)
    done = []
    for h in topo.hosts:
        if h.name not in labelled:
            done.append(f"host {h.name}: no live Ray node; its part is left")
            continue
        removed = ray.get(_remove.options(scheduling_strategy=on(labelled[h.name])).remote(
            testbed), timeout=300)
        done.append(f"host {h.name}: " + ("; ".join(removed) or "nothing left"))
    return done
