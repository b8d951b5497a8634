"""Host nodes: a network namespace and cgroups on this host, running this checkout's Python."""

from __future__ import annotations

import os
import sys

from testbed.naming import NETNS_DIR, Names
from testbed.net import cgroups, netns
from testbed.net.ledger import Ledger
from testbed.nodes.base import DROP_PRIVILEGES, NodeKind, Preexec
from testbed.topology.model import Node, Topology

HOSTS_FILE = "hosts"  # in the testbed's state directory: every node's name and address


def write_hosts_file(topo: Topology, names: Names) -> None:
    """The /etc/hosts host nodes see (containers get the same entries from Docker)."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             *(f"{n.ip}\t{n.name}" for n in topo.nodes)]
    (names.state_dir / HOSTS_FILE).write_text("\n".join(lines) + "\n")


class Host(NodeKind):
    name = "host"
    plural = "hosts"

    def create(self, topo: Topology, names: Names, nodes: list[Node]) -> None:
        write_hosts_file(topo, names)
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
        hosts = names.state_dir / HOSTS_FILE

        def enter() -> None:  # into the node's cgroups, its network namespace, its /etc/hosts
            for f in cg_files:
                with open(f, "w") as fh:
                    fh.write(str(os.getpid()))
            fd = os.open(path, os.O_RDONLY)
            netns.setns_process(fd)
            os.close(fd)
            if hosts.exists():
                netns.private_hosts_file(str(hosts))

        return argv, enter

    def workload_command(self, ledger: Ledger, node: str, program: str,
                         ) -> tuple[list[str], dict]:
        from testbed.images import WORKLOADS

        return [sys.executable, str(WORKLOADS / program)], {"PYTHONPATH": str(WORKLOADS)}
