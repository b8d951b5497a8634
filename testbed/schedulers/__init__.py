"""Schedulers: pure functions from (network view, running plan, waiting jobs, time) to a Plan.

The registry maps the names the CLI and campaigns use to the functions; register your own with
`register("name", fn, "one line", kind="streams")`: each scheduler declares the workload kind
it plans, and runs refuse a scheduler of another kind. Packages outside this one add theirs
through entry points (group `testbed.schedulers`) or `--plugin MODULE` (see plugins.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from testbed.errors import InputError
from testbed.schedulers import online, plugins
from testbed.schedulers.online import Scheduler


@dataclass(frozen=True)
class Entry:
    name: str
    fn: Scheduler
    summary: str
    kind: str = "streams"  # the workload kind it plans (see testbed.kinds)


REGISTRY: dict[str, Entry] = {}


def register(name: str, fn: Scheduler, summary: str, kind: str = "streams") -> None:
    REGISTRY[name] = Entry(name, fn, summary, kind)


def entries() -> list[Entry]:
    """Every scheduler: built in, registered by imported modules, and installed plug-ins."""
    plugins.load_entry_points(register)
    return list(REGISTRY.values())


def get(name: str, kind: str | None = None) -> Scheduler:
    """The scheduler `name`; with `kind`, refused unless it plans that workload kind. Some
    kinds' schedulers take an argument after a colon (`ilp:50ms`); the entry is the name's
    part before it."""
    name, _, arg = name.partition(":")
    if name not in REGISTRY:
        plugins.load_entry_points(register)
    if name not in REGISTRY:
        raise InputError(f"unknown scheduler {name!r}; choose one of {', '.join(REGISTRY)}")
    entry = REGISTRY[name]
    if kind is not None and entry.kind != kind:
        fits = [e.name for e in REGISTRY.values() if e.kind == kind]
        raise InputError(f"scheduler {name!r} plans {entry.kind} workloads, not {kind}; "
                         f"choose one of {', '.join(fits) or '(none registered)'}")
    if arg and entry.kind == "streams":
        raise InputError(f"scheduler {name!r} takes no argument (':{arg}'); write {name}")
    return entry.fn


register("otfa", online.otfa, "ENTS Algorithm 4: task allocation, then routing and bandwidth "
         "re-optimised over all running and new flows")
register("otfs", online.otfs, "ENTS Algorithm 3: jobs one by one, task allocation + JRBA on "
         "the bandwidth left")
register("tp", online.tp, "Task Partition baseline: Algorithm 1 placement, shortest paths, "
         "links shared equally")
register("lr", online.lr, "Kubernetes LeastRequestedPriority: whole job on the least "
         "requested node")
register("br", online.br, "Kubernetes BalancedResourceAllocation: whole job on the node with "
         "the most balanced CPU/memory use")
