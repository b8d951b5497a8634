"""What this host can emulate, found by trying in a throwaway namespace, not guessed."""

from __future__ import annotations

import functools
import shutil
import socket
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from testbed.net import cgroups, netns, ovs


@dataclass(frozen=True)
class Capabilities:
    netem: bool
    htb: bool
    vxlan: bool
    ovs: bool
    ovs_kernel_datapath: bool
    ovs_datapath: str  # what `up` uses: system (kernel) or netdev (userspace)
    docker: bool
    cgroups: dict
    cgroup_mode: str
    max_nodes_estimate: int
    docker_cgroup_driver: str | None
    iperf3: bool

    def to_dict(self) -> dict:
        return asdict(self)


def _netlink_here() -> IPRoute:
    """A netlink session in the calling thread's namespace (the socket is made here, not in
    pyroute2's own thread)."""
    return IPRoute(use_socket=socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0))


def _try_qdisc(kind: str) -> bool:
    with _netlink_here() as ip:
        ip.link("add", ifname=f"p{kind}", kind="veth", peer=f"p{kind}x")
        idx = ip.link_lookup(ifname=f"p{kind}")[0]
        try:
            if kind == "htb":
                ip.tc("add", "htb", idx, 0x10000, default=0x10)
            else:
                ip.tc("add", "netem", idx, 0x10000, delay=1000)
            return True
        except NetlinkError:
            return False


def _try_vxlan() -> bool:
    with _netlink_here() as ip:
        try:
            ip.link("add", ifname="probevx", kind="vxlan", vxlan_id=42, vxlan_port=4789)
            return True
        except NetlinkError:
            return False


def _cmd_ok(*cmd: str) -> bool:
    if not shutil.which(cmd[0]):
        return False
    try:
        return subprocess.run(cmd, capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _docker_cgroup_driver() -> str | None:
    """`cgroupfs` or `systemd` (decides how containers join their node's cgroup)."""
    if not shutil.which("docker"):
        return None
    try:
        res = subprocess.run(["docker", "info", "--format", "{{.CgroupDriver}}"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


NODE_COST_MB = 6.5  # measured: a 1,000-node mesh took 6.4 GB, switch daemons included
MEMORY_SHARE = 0.5  # of what is available now: nodes' own work needs the rest


def max_nodes_estimate() -> int:
    """How many nodes this host can hold now, from its available memory and the measured cost
    of a node (namespace, veths, userspace OVS bridge, controller state)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(int(line.split()[1]) * 1024 / 1e6 * MEMORY_SHARE / NODE_COST_MB)
    except OSError:
        pass
    return 0


@functools.cache
def probe() -> Capabilities:
    netem, htb, vxlan = netns.in_private_namespace(  # unnamed: nothing to leak on a kill
        lambda: (_try_qdisc("netem"), _try_qdisc("htb"), _try_vxlan()))
    return Capabilities(
        netem=netem, htb=htb, vxlan=vxlan,
        ovs=_cmd_ok("ovs-vsctl", "--timeout=2", "show"),
        ovs_kernel_datapath=ovs.datapath_type() == "system",
        ovs_datapath=ovs.datapath_type(),
        docker=_cmd_ok("docker", "info"),
        cgroups=cgroups.available(),
        cgroup_mode=cgroups.mode(),
        max_nodes_estimate=max_nodes_estimate(),
        docker_cgroup_driver=_docker_cgroup_driver(),
        iperf3=shutil.which("iperf3") is not None,
    )
