"""The one set of patterns for every name that reaches a path, an interface, a namespace, a
cgroup or a container (a leaf module: everything may import it, it imports nothing of ours).

Names never contain `/`, `.` or whitespace, so a name can never climb out of a directory, and
`.` is free to join a testbed's name to a node's unambiguously (`tb-lab.e1` cannot be confused
with testbed `lab-b`'s node `e1`, which is `tb-lab-b.e1`).
"""

from __future__ import annotations

import re

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
