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

import os
import time
from collections.abc import Callable

import ray

from testbed.errors import InputError, NetworkError
from testbed.naming import Names
from testbed.net.ofrelay import ControllerLink
from testbed.raycluster import LABEL, alive, check_hosts, connect, on
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

    return teardown(testbed)


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
    connect(cluster)
    labelled = {n.get("Labels", {}).get(LABEL): n for n in alive()}
    done = []
    for h in topo.hosts:
        if h.name not in labelled:
            done.append(f"host {h.name}: no live Ray node; its part is left")
            continue
        removed = ray.get(_remove.options(scheduling_strategy=on(labelled[h.name])).remote(
            testbed), timeout=300)
        done.append(f"host {h.name}: " + ("; ".join(removed) or "nothing left"))
    return done
