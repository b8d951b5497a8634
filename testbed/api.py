"""The library surface the CLI (and Python users) call: up, down, status, exec, doctor.

It never prints; progress goes through a callback.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from testbed.errors import InputError, NotRunningError
from testbed.net import build, cgroups, netns
from testbed.net.cleanup import teardown
from testbed.net.ledger import Ledger, known_testbeds
from testbed.net.names import NETNS_DIR, Names
from testbed.net.probe import probe
from testbed.topology import Topology, load
from testbed.topology.loader import NODE_NAME

Progress = Callable[[str], None]


def load_topology(path: str | Path, name: str | None = None) -> Topology:
    topo = load(path)
    if name:
        if not NODE_NAME.match(name) or not name.islower():
            raise InputError(f"--name {name!r}: use lower-case letters, digits and -")
        topo = Topology(name=name, nodes=topo.nodes, links=topo.links, source=topo.source)
    return topo


def up(path: str | Path, name: str | None = None, progress: Progress = lambda s: None) -> Ledger:
    """Bring a topology up; if it is up but its controller died, restart the controller."""
    topo = load_topology(path, name)
    ledger = Ledger.load(topo.name)
    if ledger and ledger.phase == "up" and not (ledger.controller and ledger.controller.alive()):
        progress("controller was not running: restarting it")
        build.restart_controller(ledger)
        return ledger
    return build.up(topo, progress)


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
                         "running": alive, "api": f"http://127.0.0.1:{ledger.api_port}",
                         "switches_ready": health["ready"] if health else 0,
                         "flows": health["flows"] if health else 0}
    for node, info in out["nodes"].items():
        info["netns"] = names.netns(node)
        info["present"] = (NETNS_DIR / names.netns(node)).exists()
        info["oom_kills"] = cgroups.oom_kills(names, node)
    return out


def exec_in_node(name: str | None, node: str, argv: list[str]) -> None:
    """Replace this process with `argv` running inside the node (namespace and cgroups)."""
    ledger = resolve(name)
    if node not in ledger.topology["nodes"]:
        nodes = ", ".join(ledger.topology["nodes"])
        raise InputError(f"no node {node!r} in testbed {ledger.name} (nodes: {nodes})")
    if not argv:
        raise InputError("no command given; write `testbed exec NODE -- CMD ARGS...`")
    names = Names(ledger.name)
    cgroups.join(names, node)
    fd = os.open(NETNS_DIR / names.netns(node), os.O_RDONLY)
    netns.setns_process(fd)
    os.close(fd)
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        raise InputError(f"command not found in node {node}: {argv[0]}") from None


def popen(name: str | None, node: str, argv: list[str], **kwargs) -> subprocess.Popen:
    """Start `argv` inside a node (its namespace and cgroups) as a child of this process."""
    ledger = resolve(name)
    if node not in ledger.topology["nodes"]:
        raise InputError(f"no node {node!r} in testbed {ledger.name}")
    names = Names(ledger.name)
    path = str(NETNS_DIR / names.netns(node))
    cg_files = [str(d / "cgroup.procs") for d in names.cgroup_dirs(node) if d.exists()]

    def enter() -> None:  # runs in the child between fork and exec
        for f in cg_files:
            with open(f, "w") as fh:
                fh.write(str(os.getpid()))
        fd = os.open(path, os.O_RDONLY)
        netns.setns_process(fd)
        os.close(fd)

    return subprocess.Popen(argv, preexec_fn=enter, **kwargs)  # noqa: PLW1509


def run(name: str | None, node: str, argv: list[str], timeout: float | None = None,
        ) -> subprocess.CompletedProcess:
    """Run `argv` inside a node to completion, capturing its output as text."""
    proc = popen(name, node, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def schedule(topology: str | Path, jobs: str | Path, scheduler: str, k_paths: int = 3,
             gops_per_core: float | None = None):
    """Run a scheduler offline (no network): every job of the file waiting at time 0."""
    import time

    from testbed.schedulers import get
    from testbed.schedulers.jobs import load_jobs
    from testbed.schedulers.network import DEFAULT_GOPS_PER_CORE, NetworkView
    from testbed.schedulers.plan import Plan

    fn = get(scheduler)
    topo = load(topology)
    jobset = load_jobs(jobs, topo)
    view = NetworkView.from_topology(topo, gops_per_core=gops_per_core or DEFAULT_GOPS_PER_CORE,
                                     k_paths=k_paths)
    t0 = time.perf_counter()
    plan = fn(view, Plan(scheduler), jobset.jobs, 0.0)
    from dataclasses import replace

    return replace(plan, decision_s=time.perf_counter() - t0)


def simulate(topology: str | Path, jobs: str | Path, scheduler: str, k_paths: int = 3,
             gops_per_core: float | None = None):
    """Event-driven simulation of an online scheduler on a topology (no network)."""
    from testbed.schedulers import get
    from testbed.schedulers.jobs import load_jobs
    from testbed.schedulers.network import DEFAULT_GOPS_PER_CORE, NetworkView
    from testbed.schedulers.simulate import simulate as run_sim

    fn = get(scheduler)
    topo = load(topology)
    view = NetworkView.from_topology(topo, gops_per_core=gops_per_core or DEFAULT_GOPS_PER_CORE,
                                     k_paths=k_paths)
    return run_sim(view, load_jobs(jobs, topo).jobs, fn, scheduler)


def doctor() -> dict:
    return probe().to_dict()
