"""The one set of patterns for every name that reaches a path, an interface, a namespace, a
cgroup or a container (a leaf module: everything may import it, it imports nothing of ours).

Names never contain `/`, `.` or whitespace, so a name can never climb out of a directory, and
`.` is free to join a testbed's name to a node's unambiguously (`tb-lab.e1` cannot be confused
with testbed `lab-b`'s node `e1`, which is `tb-lab-b.e1`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

NODE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
NODE_NAME_RULE = "start with a letter; use letters, digits, - and _ (at most 32)"
TESTBED_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
TESTBED_NAME_RULE = "use lower-case letters, digits and -, at most 31 characters"
GENERATOR_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,23}$")
GENERATOR_PREFIX_RULE = "start with a letter; use letters, digits, - and _ (at most 24)"
# Docker's reference grammar, narrowed: lower-case path components separated by single / . _ -
# (never `..`), an optional :tag.
IMAGE_NAME = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$")
IMAGE_NAME_RULE = ("use a Docker image name such as edge-node or debian:bookworm "
                   "(lower-case letters, digits, . _ - /, an optional :tag)")
SEPARATOR = "."  # joins a testbed's name and a node's name; neither may contain it


def is_node_name(name: object) -> bool:
    return isinstance(name, str) and bool(NODE_NAME.match(name))


def is_testbed_name(name: object) -> bool:
    return isinstance(name, str) and bool(TESTBED_NAME.match(name))


def is_image_name(name: object) -> bool:
    return isinstance(name, str) and len(name) <= 200 and bool(IMAGE_NAME.match(name))

HOST_PORT_OFPORT = 1  # a node's own port on its switch


def link_ofport(link_index: int) -> int:
    """OpenFlow port number of link k on both switches it joins."""
    return link_index + 2


STATE_ROOT = Path("/run/testbed")
NETNS_DIR = Path("/run/netns")
CGROUP_ROOT = Path("/sys/fs/cgroup")
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

# How names become kernel objects:
# Every kernel and OVS object a testbed makes is named from the testbed's name, so that
# cleanup can find exactly what it made (and nothing else) even without its state file.
#
# Interface names are limited to 15 characters, so they use a 5-hex-digit tag derived from the
# testbed name: `t<tag>h<i>` (node i's port on its own switch), `t<tag>l<k>a|b` (the ends of
# link k), `t<tag>s<i>` (node i's OVS bridge). Namespaces (and containers) are
# `tb-<testbed>.<node>`: neither name may contain `.`, so one testbed's names can never be read
# as another's (testbed `lab` with node `b-e1` vs testbed `lab-b` with node `e1`). Two names whose
# tags collide cannot be up at once (`up` refuses), so the tag identifies exactly one testbed.
