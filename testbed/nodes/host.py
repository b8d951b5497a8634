"""Host nodes: a network namespace and cgroups on this host, running this checkout's Python."""

from __future__ import annotations

import os
import sys

from testbed.naming import NETNS_DIR, Names
from testbed.net import cgroups, netns
from testbed.net.ledger import Ledger
from testbed.nodes.base import DROP_PRIVILEGES, NodeKind, Preexec
from testbed.topology.model import Node, Topology


class Host(NodeKind):
    name = "host"
    plural = "hosts"

    def create(self, topo: Topology, names: Names, nodes: list[Node]) -> None:
        netns.create([names.netns(n.name) for n in nodes])
        for n in nodes:
            cgroups.create(names, n.name, n.cpu, n.memory_mb)

    def command(self, ledger: Ledger, node: str, argv: list[str], tie_to_parent: bool,
                unprivileged: bool) -> tuple[list[str], Preexec]:
        names = ledger.names
        if unprivileged:
            argv = [*DROP_PRIVILEGES, *argv]
        path = str(NETNS_DIR / names.netns(node))
        cg_files = cgroups.procs_files(names, node)

        def enter() -> None:  # into the node's cgroups, then its network namespace
            for f in cg_files:
                with open(f, "w") as fh:
                    fh.write(str(os.getpid()))
            fd = os.open(path, os.O_RDONLY)
            netns.setns_process(fd)
            os.close(fd)

        return argv, enter

    def workload_command(self, ledger: Ledger, node: str, program: str,
                         ) -> tuple[list[str], dict]:
        from testbed.images import WORKLOADS

        return [sys.executable, str(WORKLOADS / program)], {"PYTHONPATH": str(WORKLOADS)}
