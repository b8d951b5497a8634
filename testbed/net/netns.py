"""Named network namespaces made and entered from this process, without a helper process each.

`ip netns add` and pyroute2's `netns.create` fork a process per namespace; at 100 nodes that
dominates bring-up. A thread can unshare its own network namespace and bind-mount it under
/run/netns, then return to the original one, so all namespaces are made by one thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import threading
from collections.abc import Iterator

from pyroute2 import IPRoute

from testbed.errors import NetworkError
from testbed.naming import NETNS_DIR

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MNT_DETACH = 2
CLONE_NEWNS = 0x00020000
MS_REC = 16384
MS_SLAVE = 1 << 19


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise NetworkError(f"{what}: {os.strerror(err)}")


def _in_thread(fn):
    """Run fn in a fresh thread (namespace switches stay confined to it) and return its result."""
    out: dict = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as e:  # re-raised in the caller
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out.get("value")


def create(names: list[str]) -> None:
    """Create named namespaces; existing names are an error (they are not ours to reuse)."""
    NETNS_DIR.mkdir(parents=True, exist_ok=True)

    def work() -> None:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            for name in names:
                path = NETNS_DIR / name
                try:
                    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
                except FileExistsError:
                    raise NetworkError(f"network namespace {name} already exists") from None
                _check(_libc.unshare(CLONE_NEWNET), f"unshare for {name}")
                _check(_libc.mount(b"/proc/thread-self/ns/net", str(path).encode(), b"none",
                                   MS_BIND, None), f"bind-mount {path}")
        finally:
            _libc.setns(home, CLONE_NEWNET)
            os.close(home)

    _in_thread(work)


def in_private_namespace(fn):
    """Run `fn()` in a fresh, unnamed network namespace (in a thread of its own) and return its
    result. Nothing names the namespace, so it vanishes with the thread even if this process is
    killed mid-way: there is nothing for cleanup to find."""

    def work():
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            _check(_libc.unshare(CLONE_NEWNET), "unshare a private namespace")
            return fn()
        finally:
            _libc.setns(home, CLONE_NEWNET)
            os.close(home)

    return _in_thread(work)


def private_hosts_file(hosts: str) -> bool:
    """Give the calling thread its own mount namespace in which `hosts` is /etc/hosts (what
    `ip netns exec` does with /etc/netns/NAME/hosts): a host node's processes resolve the
    other nodes by name while the host's own file stays as it is. False if it cannot."""
    if _libc.unshare(CLONE_NEWNS) != 0:
        return False
    if _libc.mount(None, b"/", None, MS_REC | MS_SLAVE, None) != 0:
        return False
    return _libc.mount(hosts.encode(), b"/etc/hosts", b"none", MS_BIND, None) == 0


def attach(name: str, pid: int) -> None:
    """Name the network namespace of process `pid` (a container's) like `ip netns attach`."""
    NETNS_DIR.mkdir(parents=True, exist_ok=True)
    path = NETNS_DIR / name
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    except FileExistsError:
        raise NetworkError(f"network namespace {name} already exists") from None
    _check(_libc.mount(f"/proc/{pid}/ns/net".encode(), str(path).encode(), b"none", MS_BIND,
                       None), f"bind-mount the namespace of pid {pid} at {path}")


def remove(name: str) -> bool:
    """Unmount and delete a namespace; the kernel frees its interfaces. False if absent."""
    path = NETNS_DIR / name
    if not path.exists():
        return False
    _libc.umount2(str(path).encode(), MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return True


def list_names(prefix: str) -> list[str]:
    if not NETNS_DIR.exists():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def _enter_then(name: str, make):
    try:
        fd = os.open(NETNS_DIR / name, os.O_RDONLY)
    except FileNotFoundError:
        raise NetworkError(f"network namespace {name} does not exist") from None
    try:
        return _enter_fd_then(fd, make, name)
    finally:
        os.close(fd)


def _enter_fd_then(fd: int, make, what: str):
    """make() run by a thread that enters the namespace behind `fd` and leaves it after."""
    def work():
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            _check(_libc.setns(fd, CLONE_NEWNET), f"enter {what}")
            return make()
        finally:
            _libc.setns(home, CLONE_NEWNET)
            os.close(home)

    return _in_thread(work)


def socket_in(fd: int, family: int, kind: int) -> socket.socket:
    """A socket living in the namespace behind the open descriptor `fd` (a process kept
    in one namespace can still make sockets in another it was handed)."""
    return _enter_fd_then(fd, lambda: socket.socket(family, kind), f"namespace fd {fd}")


@contextlib.contextmanager
def netlink(name: str | None) -> Iterator[IPRoute]:
    """A netlink session bound to namespace `name` (None: this process's namespace)."""
    if name is None:
        ipr = IPRoute()
    else:  # pyroute2 opens its own socket lazily elsewhere; hand it one made inside `name`
        ipr = IPRoute(use_socket=open_socket(name, socket.AF_NETLINK, socket.SOCK_DGRAM, 0))
    try:
        yield ipr
    finally:
        ipr.close()


def open_socket(name: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket living in namespace `name` (sockets keep the namespace they were made in)."""
    return _enter_then(name, lambda: socket.socket(family, kind, proto))


def inode(name: str) -> int | None:
    try:
        return os.stat(NETNS_DIR / name).st_ino
    except OSError:
        return None


def pids_in(inodes: set[int]) -> list[int]:
    """Processes whose network namespace is one of `inodes`."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino in inodes:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def setns_process(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """Move the calling (single-threaded) process into the namespace behind `fd`
    (nstype 0: whatever kind of namespace `fd` is)."""
    _check(_libc.setns(fd, nstype), "enter namespace")
