"""What differs between kinds of node, behind one interface.

Every module that builds, runs, samples, shapes or tears down a node asks the node's kind
(`testbed.nodes.of(...)`) instead of comparing kind names, so a new kind of node is one new
module and one registration line. Host and docker nodes live in a network namespace on this
host (`local`): cgroups, netlink and the node's own eth0 work the same for both. A device is
a machine of its own, reached over SSH.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from pyroute2 import IPRoute

from testbed.htb import FlowRate
from testbed.naming import NETNS_DIR, Names
from testbed.net import cgroups, flowrates, netns
from testbed.net.ethtool import disable_segmentation, disable_tx_checksum
from testbed.net.ledger import Ledger
from testbed.topology.model import SUBNET, Node, Topology

UNPRIVILEGED_UID = 65534  # nobody
DROP_PRIVILEGES = ["setpriv", f"--reuid={UNPRIVILEGED_UID}", f"--regid={UNPRIVILEGED_UID}",
                   "--clear-groups", "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all",
                   "--"]
Preexec = Callable[[], None]


class Files:
    """How a node's task configurations go in and its traces come back: a host node shares
    this host's filesystem, so files stay where the run keeps them."""

    def put(self, local: Path, text: str) -> str:
        local.write_text(text)
        return str(local)

    def trace_path(self, local: Path) -> str:
        return str(local)

    def fetch(self, local: Path) -> None:
        pass

    def node_clock(self, t: float) -> float:
        """A testbed wall-clock time (s) as the node's own clock shows it."""
        return t

    def close(self) -> None:
        """The run is over and its traces are back: remove what only this run needed."""

    def testbed_clock(self, t: float) -> float:
        """A time the node's clock stamped (e.g. in a message it sent), on the testbed's."""
        return t


class SharedDir(Files):
    """Files go through a directory the node sees at the same path (a container's mount)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def put(self, local: Path, text: str) -> str:
        local.write_text(text)
        (self.dir / local.name).write_text(text)
        return str(self.dir / local.name)

    def trace_path(self, local: Path) -> str:
        return str(self.dir / local.name)

    def fetch(self, local: Path) -> None:
        if (self.dir / local.name).exists():
            shutil.move(self.dir / local.name, local)


class UnprivilegedFiles(SharedDir):
    """A host node whose tasks run as nobody: the run directory may sit anywhere root alone can
    enter, so configs go (readable) and traces come back (pre-made, owned by nobody) through a
    directory of their own that nobody can reach."""

    def __init__(self) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="testbed-tasks-")))
        os.chmod(self.dir, 0o755)

    def trace_path(self, local: Path) -> str:
        path = self.dir / local.name
        path.touch()
        os.chown(path, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
        return str(path)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)  # configs handed over; traces are back


class NodeKind:
    """One kind of node. Methods take the testbed's record (Ledger) or, while it is being
    built, its Topology and Names; kinds keep no state of their own."""

    name: ClassVar[str]
    plural: ClassVar[str]  # how `up` and `down` report them: "containers", "devices"
    local: ClassVar[bool] = True  # a network namespace and cgroups on this host

    # ---- up -----------------------------------------------------------------------------
    def check(self, topo: Topology, nodes: list[Node], accept_new_host_keys: bool) -> dict:
        """Fail before anything is built if these nodes cannot be made; returns what the
        later steps need to know about each node (e.g. a device's facts)."""
        return {}

    def diagnose(self, nodes: list[Node], accept_new_host_keys: bool) -> dict[str, dict]:
        """`testbed doctor FILE`: node -> what it offers and lacks, for nodes that live
        elsewhere (nothing for nodes made on this host)."""
        return {}

    def plan(self, topo: Topology, names: Names, nodes: list[Node], checked: dict) -> dict:
        """What will be changed outside this host, recorded before any change so that `down`
        can undo it (JSON-able, node -> record)."""
        return {}

    def create(self, topo: Topology, names: Names, nodes: list[Node]) -> None:
        """The nodes themselves (namespaces, cgroups, containers)."""

    def add_port(self, ip: IPRoute, names: Names, node: Node, group: int, planned: dict,
                 into: Path | None = None) -> None:
        """The node's port on this host (names.host_port), the end its switch attaches to,
        made in `ip`'s namespace. `into` is given for a tunnel end only (a device's port on a
        host of a split topology): made where the host's address is, moved into the switch
        daemon's namespace `into` at once, its socket staying with the address."""
        ip.link("add", ifname=names.host_port(node.index), kind="veth", group=group,
                peer={"ifname": "eth0", "net_ns_fd": str(NETNS_DIR / names.netns(node.name))})

    def tune_port(self, sock, ifname: str) -> None:
        """Offload settings of the node's port beyond the ones every port gets."""

    def configure(self, names: Names, node: Node) -> None:
        """Address the node's side of its port."""
        ns = names.netns(node.name)
        with netns.netlink(ns) as ip:
            eth0 = ip.link_lookup(ifname="eth0")[0]
            ip.link("set", index=eth0, address=node.mac)
            ip.addr("add", index=eth0, address=node.ip, prefixlen=SUBNET.prefixlen)
            ip.link("set", index=eth0, state="up")
            ip.link("set", index=ip.link_lookup(ifname="lo")[0], state="up")
        with netns.open_socket(ns, socket.AF_INET, socket.SOCK_DGRAM) as s:
            disable_tx_checksum(s, "eth0")
            disable_segmentation(s, "eth0")  # per-flow HTB classes shape frames

    def finish(self, topo: Topology, planned: dict) -> None:
        """Steps after the switches and shaping exist (e.g. a device's end of its tunnel)."""

    def confirm(self, names: Names, nodes: list[Node]) -> None:
        """Last step of `up`, seconds after `create`: raise if a node died in the meantime
        (a container whose command ended shortly after it started)."""

    def reach_namespace(self, names: Names, node: str) -> str | None:
        """The namespace reachability is checked from (None: the node is not on this host)."""
        return names.netns(node)

    # ---- down ---------------------------------------------------------------------------
    def teardown(self, testbed: str, ledger: Ledger | None) -> str:
        """Undo what this kind made for testbed `testbed` (the Ledger may be missing after
        a crash); returns what was removed. Raising keeps the state so `down` can retry."""
        return ""

    # ---- running ------------------------------------------------------------------------
    def command(self, ledger: Ledger, node: str, argv: list[str], tie_to_parent: bool,
                unprivileged: bool) -> tuple[list[str], Preexec]:
        """The command line and preexec function that run `argv` inside the node."""
        raise NotImplementedError

    def workload_command(self, ledger: Ledger, node: str, program: str,
                         ) -> tuple[list[str], dict]:
        """argv prefix and environment that run workloads/`program` in the node."""
        raise NotImplementedError

    def files(self, ledger: Ledger, node: str, unprivileged: bool) -> Files:
        return UnprivilegedFiles() if unprivileged else Files()

    def status(self, ledger: Ledger, nodes: list[str]) -> dict[str, dict]:
        """node -> what `testbed status` shows beyond the recorded settings."""
        return {n: {"present": (NETNS_DIR / ledger.names.netns(n)).exists(),
                    "applied": cgroups.limits(ledger.names, n),  # read back from the kernel
                    "oom_kills": cgroups.oom_kills(ledger.names, n)} for n in nodes}

    def environment(self, ledger: Ledger, node: str) -> dict[str, str]:
        """Variables the node gives every command beyond the caller's (a container's ENV)."""
        return {}

    def crash(self, ledger: Ledger, node: str) -> int:
        """Kill everything running in the node (its cgroups' processes); returns how many."""
        pids: set[int] = set()
        for f in cgroups.procs_files(ledger.names, node):
            with contextlib.suppress(OSError, ValueError):
                pids |= {int(x) for x in Path(f).read_text().split()}
        cgroups.kill_all(pids)
        return len(pids)

    def restart(self, ledger: Ledger, node: str) -> None:
        """After a crash: what the node needs before its links come back (nothing here: the
        namespace and its addresses survived)."""

    def reconnect(self, ledger: Ledger, node: Node) -> None:
        """Wire a node that lost its port back into the fabric (nothing to do by default)."""

    def set_limits(self, ledger: Ledger, node: str, cpu: float | None, memory_mb: int | None,
                   current_cpu: float | None) -> None:
        cgroups.set_limits(ledger.names, node, cpu, memory_mb)

    def usage(self, ledger: Ledger, node: str) -> tuple[float, int] | None:
        """(CPU seconds, memory bytes) used so far, or None if sampled another way."""
        return cgroups.usage(ledger.names, node)

    def collector(self, ledger: Ledger, node: str, interval_s: float):
        """A background sampler of the node's own statistics (None: `usage` covers it)."""
        return None

    # ---- per-flow rates at the node's egress -------------------------------------------
    def set_flow_rates(self, ledger: Ledger, node: str, flows: list[FlowRate],
                       ) -> tuple[dict[int, int], set[int]]:
        """Give each flow its class; returns what the node then holds (see `flow_rates`)."""
        return flowrates.apply(ledger.names.netns(node), node, flows)

    def remove_flow_rates(self, ledger: Ledger, node: str, flows: list[FlowRate]) -> None:
        flowrates.remove(ledger.names.netns(node), flows)

    def flow_rates(self, ledger: Ledger, node: str) -> tuple[dict[int, int], set[int]]:
        """(class minor -> rate in bit/s, class minors a filter steers into), read back."""
        return flowrates.read(ledger.names.netns(node))
