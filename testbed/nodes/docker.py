"""Docker nodes: a container started with no network inside the node's cgroup; its network
namespace is then named like a host node's, so links, shaping and routing treat both alike.
Commands enter the container's namespaces as descendants of the caller (see
`containers.command`); files travel through a directory mounted at the same path inside."""

from __future__ import annotations

import os

from testbed.errors import InputError
from testbed.images import WORKLOAD_DIR
from testbed.naming import Names
from testbed.net import cgroups, containers
from testbed.net.ledger import Ledger
from testbed.nodes.base import DROP_PRIVILEGES, Files, Preexec, SharedDir
from testbed.nodes.host import Host
from testbed.topology.model import Node, Topology


class Docker(Host):
    name = "docker"
    plural = "containers"

    def check(self, topo: Topology, nodes: list[Node], accept_new_host_keys: bool) -> dict:
        check_images(topo, nodes)
        return {}

    def create(self, topo: Topology, names: Names, nodes: list[Node]) -> None:
        for n in nodes:
            cgroups.create(names, n.name, n.cpu, n.memory_mb)
        share = {n.name: names.share_dir(n.name) for n in nodes}
        for d in share.values():
            d.mkdir(parents=True, exist_ok=True)
        containers.start(names, nodes, share, {n.name: n.ip for n in topo.nodes})

    def confirm(self, names: Names, nodes: list[Node]) -> None:
        containers.confirm_running(names, nodes)

    def teardown(self, testbed: str, ledger: Ledger | None) -> str:
        count = containers.remove_all(testbed)  # by label: works without the state file
        return f"{count} containers" if count else ""

    def command(self, ledger: Ledger, node: str, argv: list[str], tie_to_parent: bool,
                unprivileged: bool) -> tuple[list[str], Preexec]:
        if unprivileged:
            argv = [*DROP_PRIVILEGES, *argv]
        pid = containers.init_pid(ledger.names, node)
        return (containers.command(pid, argv, tie_to_parent),
                containers.joining_cgroups(pid, tie_to_parent
                                           and not containers.has_setpriv(pid)))

    def environment(self, ledger: Ledger, node: str) -> dict[str, str]:
        return containers.environment(ledger.names, node)

    def workload_command(self, ledger: Ledger, node: str, program: str,
                         ) -> tuple[list[str], dict]:
        return ["python3", f"{WORKLOAD_DIR}/{program}"], {
            "PYTHONPATH": WORKLOAD_DIR, "PATH": "/usr/local/bin:/usr/bin:/bin"}

    def files(self, ledger: Ledger, node: str, unprivileged: bool) -> Files:
        return SharedDir(ledger.names.share_dir(node))

    def status(self, ledger: Ledger, nodes: list[str]) -> dict[str, dict]:
        out = super().status(ledger, nodes)
        boxes = containers.states(ledger.name)  # one query for every container
        for n in nodes:
            box = out[n]["container"] = boxes.get(n, {"status": "missing"})
            if box["status"] == "running" and containers.detached(ledger.names, n):
                box["status"] = "restarted"
                box["fix"] = f"testbed node reconnect {n}"
            out[n]["present"] = out[n]["present"] and box["status"] == "running"
        return out

    def crash(self, ledger: Ledger, node: str) -> int:
        """The container is killed (as a crash would), the node's port stays in its old
        namespace until `restart`."""
        return containers.kill(ledger.names, node)

    def restart(self, ledger: Ledger, node: str) -> None:
        containers.start_again(ledger.names, node)
        topo = Topology.from_dict(ledger.topology, ledger.topology_file)
        self.reconnect(ledger, next(n for n in topo.nodes if n.name == node))

    def reconnect(self, ledger: Ledger, node: Node) -> None:
        """A container restarted behind the testbed's back gets its port back."""
        if not containers.detached(ledger.names, node.name):
            return
        containers.reconnect(ledger.names, node.name)
        self.configure(ledger.names, node)

    def set_limits(self, ledger: Ledger, node: str, cpu: float | None, memory_mb: int | None,
                   current_cpu: float | None) -> None:
        """A child's CPU quota may not exceed its parent's: the container's limits (the child)
        are raised after its node cgroup's and lowered before them."""
        def node_cgroup() -> None:
            cgroups.set_limits(ledger.names, node, cpu, memory_mb)

        def container() -> None:
            containers.update(ledger.names, node, cpu, memory_mb)

        raising = cpu is None or cpu >= (current_cpu or os.cpu_count() or 1)
        for step in ((node_cgroup, container) if raising else (container, node_cgroup)):
            step()


def check_images(topo: Topology, nodes: list[Node] | None = None) -> None:
    """Every docker node's image exists and is current (needs a running engine)."""
    from testbed import images

    nodes = [n for n in topo.nodes if n.image] if nodes is None else nodes
    wanted = sorted({n.image for n in nodes})
    if not wanted:
        return
    images.client()  # a CapabilityError naming the fix when there is no engine
    for image in wanted:
        state = images.image_state(image)
        node = next(n.name for n in nodes if n.image == image)
        plain, _, tag = image.partition(":")
        if state == "missing" and (plain not in images.recipes() or tag not in ("", "latest")):
            raise InputError(
                f"{topo.source}: nodes.{node}.image: no Docker image {image!r} and no recipe "
                f"images/{plain}/; fix: use a recipe ({', '.join(images.recipes())}) or an "
                "image from `docker images`")
        if state in ("missing", "stale"):
            why = "is not built" if state == "missing" else \
                "was built from older images/ or workloads/ files"
            raise InputError(f"{topo.source}: nodes.{node}.image: {image} {why}; "
                             f"fix: run `testbed image build {plain}`")
