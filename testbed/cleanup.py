"""Teardown: remove exactly what a testbed made, found by its state file and its names.

Works after a crash or SIGKILL at any moment of `up` (names are deterministic), keeps going
when one step fails and reports all failures at the end. Selects by exact ownership: namespaces
`tb-<name>.<node>` (`.` occurs in no testbed or node name, so `lab` never matches `lab-b`'s),
containers by the exact label value, cgroups under testbed/<name>/, recorded pids, and
interfaces/bridges by the testbed's tag, skipped if another running testbed owns that tag.
Each kind of node undoes its own part (containers by label, devices' tunnels over SSH).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from testbed import nodes, procs
from testbed.errors import NetworkError
from testbed.naming import Names
from testbed.net import cgroups, netns, ovs
from testbed.net.controller import controller_argv
from testbed.net.ledger import Ledger, known_testbeds


def teardown(name: str, force: bool = False) -> list[str]:
    """Remove testbed `name`; returns what was removed. Raises NetworkError listing failures.
    What a node kind could not undo (a device out of reach) keeps the state file so that
    `down` can retry; `force` removes it anyway (what is left on the device is reported)."""
    names = Names(name)
    ledger = Ledger.load(name)
    done: list[str] = []
    errors: list[str] = []

    def step(what: str, fn) -> None:
        try:
            result = fn()
            if result:
                done.append(f"{what}: {result}")
        except Exception as e:  # keep going; report everything at the end
            errors.append(f"{what}: {e}")

    step("controller", lambda: _stop_controller(names, ledger))
    kept = []  # what a kind could not undo keeps the state file: `down` again retries it
    for kind in nodes.KINDS.values():
        before = len(errors)
        step(kind.plural, lambda k=kind: k.teardown(name, ledger))
        kept += errors[before:]
    step("processes", lambda: _kill_node_processes(names))
    if _tag_is_ours(names):
        step("switches", lambda: _delete_bridges(names))
        step("interfaces", lambda: _delete_interfaces(names, ledger))
    step("namespaces", lambda: _delete_namespaces(names))
    step("cgroups", lambda: cgroups.remove(names))
    if kept and force:
        done.append("left behind (unreachable, removed from this host's records): "
                    + "; ".join(kept))
        errors[:] = [e for e in errors if e not in kept]
    if not kept or force:
        step("state", lambda: _remove_state(names))
    if errors:
        raise NetworkError(f"teardown of {name} incomplete: " + "; ".join(errors))
    return done


def _tag_is_ours(names: Names) -> bool:
    """False if another running testbed owns the same interface tag (then its interfaces are
    not ours to remove; `up` never lets two such testbeds coexist, so this guards `down` of a
    name that is not up)."""
    return not any(Names(t).tag == names.tag for t in known_testbeds() if t != names.testbed)


def _n(count: int, what: str) -> str:
    return f"{count} {what}" if count else ""


def _stop_controller(names: Names, ledger: Ledger | None) -> str:
    """The recorded controller, and any whose command line names this testbed's state
    directory (`up` killed after spawning it but before saving its pid)."""
    pids = procs.with_argv(controller_argv(names.state_dir))
    if ledger and ledger.controller and ledger.controller.alive():
        pids.add(ledger.controller.pid)
    if not pids:
        return ""
    cgroups.kill_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and procs.with_argv(controller_argv(names.state_dir)):
        time.sleep(0.02)
    left = procs.with_argv(controller_argv(names.state_dir))
    cgroups.kill_all(left)
    return "pid " + ", ".join(map(str, sorted(pids))) + (" (killed)" if left else "")


def _kill_node_processes(names: Names) -> str:
    inodes = {i for ns in netns.list_names(names.netns_prefix) if (i := netns.inode(ns))}
    pids = (cgroups.pids(names) | set(netns.pids_in(inodes))) - {os.getpid()}
    cgroups.kill_all(pids)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
        time.sleep(0.02)
    return f"{len(pids)} killed" if pids else ""


def _delete_bridges(names: Names) -> str:
    if not ovs.running():
        return ""
    ours = [b for b in ovs.list_bridges() if names.owns_interface(b)]
    ovs.delete_bridges(ours)
    return f"{len(ours)} bridges" if ours else ""


def _delete_interfaces(names: Names, ledger: Ledger | None) -> str:
    with IPRoute() as ip:
        if ledger and ledger.extra.get("interface_group"):
            with contextlib.suppress(NetlinkError):
                ip.link("del", group=ledger.extra["interface_group"])
        left = [link for link in ip.get_links()
                if names.owns_interface(link.get_attr("IFLA_IFNAME"))]
        for link in left:  # interfaces made before the group was set, or renamed
            with contextlib.suppress(NetlinkError):
                ip.link("del", index=link["index"])
    return f"{len(left)} stray interfaces" if left else ""


def _delete_namespaces(names: Names) -> str:
    gone = [ns for ns in netns.list_names(names.netns_prefix) if netns.remove(ns)]
    return f"{len(gone)} namespaces" if gone else ""


def _remove_state(names: Names) -> str:
    if names.state_dir.exists():
        shutil.rmtree(names.state_dir)
        return str(names.state_dir)
    return ""
