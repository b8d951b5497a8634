"""Every kernel and OVS object a testbed makes is named from the testbed's name, so that
cleanup can find exactly what it made (and nothing else) even without its state file.

Interface names are limited to 15 characters, so they use a 5-hex-digit tag derived from the
testbed name: `t<tag>h<i>` (node i's port on its own switch), `t<tag>l<k>a|b` (the ends of
link k), `t<tag>s<i>` (node i's OVS bridge). Namespaces (and containers) are
`tb-<testbed>.<node>`: neither name may contain `.`, so one testbed's names can never be read
as another's (testbed `lab` with node `b-e1` vs testbed `lab-b` with node `e1`). Two names whose
tags collide cannot be up at once (`up` refuses), so the tag identifies exactly one testbed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from testbed.naming import HOST_PORT_OFPORT, SEPARATOR, link_ofport  # noqa: F401

STATE_ROOT = Path("/run/testbed")
NETNS_DIR = Path("/run/netns")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_CONTROLLERS = ("cpu", "memory", "pids", "cpuacct")
CONTAINER_LABEL = "org.edge-testbed.name"

@dataclass(frozen=True)
class Names:
    testbed: str

    @property
    def tag(self) -> str:
        return "t" + hashlib.sha1(self.testbed.encode()).hexdigest()[:5]

    @property
    def netns_prefix(self) -> str:
        return f"tb-{self.testbed}{SEPARATOR}"

    def netns(self, node: str) -> str:
        return self.netns_prefix + node

    def host_port(self, index: int) -> str:
        return f"{self.tag}h{index}"

    def link_port(self, link_index: int, end: int) -> str:
        return f"{self.tag}l{link_index}{'ab'[end]}"

    def device_port(self, index: int) -> str:
        """The tunnel interface on device node `index` (made on the device, not here)."""
        return f"{self.tag}d{index}"

    def bridge(self, index: int) -> str:
        return f"{self.tag}s{index}"

    def owns_interface(self, ifname: str) -> bool:
        rest = ifname[len(self.tag):]
        return ifname.startswith(self.tag) and rest[:1] in ("h", "l", "s") and rest[1:2].isdigit()

    def cgroup_dirs(self, node: str | None = None) -> list[Path]:
        sub = Path("testbed") / self.testbed / (node or "")
        return [CGROUP_ROOT / c / sub for c in CGROUP_CONTROLLERS]

    @property
    def state_dir(self) -> Path:
        return STATE_ROOT / self.testbed

    @property
    def api_socket(self) -> Path:
        """The controller's flow API: a Unix socket only root can open (state dir is 0700)."""
        return self.state_dir / "api.sock"

    def share_dir(self, node: str) -> Path:
        """A directory a container node sees at the same path (configs in, traces out)."""
        return self.state_dir / "share" / node
