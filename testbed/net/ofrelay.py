"""How the switches of a split topology's host reach the one controller: OpenFlow over TLS.

A host's switch daemons live in namespaces with no route out (testbed/net/shards.py), so each
connects to a Unix socket in its run directory, as on one machine; on a host of a split
topology a relay process listens there instead of a link to the controller's own socket. For
every switch connection the relay opens a TCP connection from the namespace that holds the
host's address to the controller's TLS port on the driver's machine, proves itself with the
host's certificate and checks the controller's (testbed/net/tls.py), then copies bytes both
ways. The controller ends TLS the same way (`splice` below) and hands os-ken a plain stream.

The relay runs inside the host's first switch-daemon namespace, so `down` stops it with the
daemons (also after a SIGKILL); it makes its outgoing sockets in the host's namespace through
a descriptor it inherited. One relay per host, one asyncio loop, no thread per connection.

    python -m testbed.net.ofrelay NETNS_FD ADDRESS PORT CA CERT KEY SOCKET...
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from testbed.errors import NetworkError
from testbed.naming import NETNS_DIR, Names
from testbed.net import netns, shards
from testbed.net.tls import CONTROLLER_NAME, Credentials

CONNECT_TIMEOUT_S = 10.0
START_TIMEOUT_S = 15.0
CHUNK = 65536
CHECKOUT = Path(__file__).resolve().parent.parent.parent
log = logging.getLogger("testbed.ofrelay")


@dataclass(frozen=True)
class ControllerLink:
    """What a host's part needs to reach the controller: its address as that host reaches it,
    its TLS port, and the host's credentials."""

    address: str
    port: int
    creds: Credentials


# ---- both ends: copy between two streams ----------------------------------------------------
async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(OSError, ssl.SSLError, RuntimeError):
            writer.close()


async def splice(a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 b: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    """Copy a -> b and b -> a until either side closes; then close both."""
    await asyncio.gather(_pump(a[0], b[1]), _pump(b[0], a[1]))


# ---- the host's side -----------------------------------------------------------------------
def start(names: Names, host: str, host_netns: str | None, daemons: list[int],
          link: ControllerLink) -> None:
    """Write the host's credentials and start its relay; returns once every daemon's socket
    is listening. Raises NetworkError with the relay's log if it does not start."""
    ca, cert, key = link.creds.write(names.state_dir / "tls", f"host-{host}")
    sockets = [shards.run_dir(names, k) / "controller.sock" for k in daemons]
    where = NETNS_DIR / host_netns if host_netns else Path("/proc/self/ns/net")
    ns_fd = os.open(where, os.O_RDONLY)
    log_path = names.state_dir / f"relay-{host}.log"
    try:
        with open(log_path, "ab") as out:
            # `setsid -f`: not a child of this process, so it outlives a builder that is a
            # Ray worker (Ray kills a worker's direct children when the worker exits)
            started = subprocess.run(
                ["setsid", "-f", "ip", "netns", "exec", shards.namespace(names, daemons[0]),
                 sys.executable, "-m", "testbed.net.ofrelay", str(ns_fd), link.address,
                 str(link.port), str(ca), str(cert), str(key), *map(str, sockets)],
                pass_fds=(ns_fd,), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, cwd=CHECKOUT, check=False)
    finally:
        os.close(ns_fd)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not all(s.is_socket() for s in sockets):
        if started.returncode != 0 or time.monotonic() > deadline:
            raise NetworkError(f"host {host}: the relay to the controller did not start: "
                               f"{log_path.read_text()[-600:]}")
        time.sleep(0.02)


async def _connect(ns_fd: int, address: str, port: int) -> socket.socket:
    """A TCP connection to the controller from the host's namespace. A refused one is tried
    again for a while: the controller may be starting (at `up`, or restarted), and a switch
    told to retry would wait its own back-off of up to 8 s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CONNECT_TIMEOUT_S
    while True:
        sock = netns.socket_in(ns_fd, socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (address, port)),
                                   max(0.1, deadline - loop.time()))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except ConnectionRefusedError:
            sock.close()
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)
        except BaseException:
            sock.close()
            raise


async def _relay(ns_fd: int, address: str, port: int, ctx: ssl.SSLContext,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        sock = await _connect(ns_fd, address, port)
        controller = await asyncio.wait_for(asyncio.open_connection(
            sock=sock, ssl=ctx, server_hostname=CONTROLLER_NAME), CONNECT_TIMEOUT_S)
    except (TimeoutError, OSError, ssl.SSLError) as e:
        log.warning("cannot reach the controller at %s:%d: %s", address, port,
                    str(e) or type(e).__name__)
        writer.close()
        return
    await splice((reader, writer), controller)


async def _serve(ns_fd: int, address: str, port: int, ctx: ssl.SSLContext,
                 paths: list[str]) -> None:
    servers = []
    for path in paths:
        Path(path).unlink(missing_ok=True)
        old = os.umask(0o177)  # root only, like the controller's own socket
        try:
            servers.append(await asyncio.start_unix_server(
                functools.partial(_relay, ns_fd, address, port, ctx), path=path))
        finally:
            os.umask(old)
    log.info("relaying %d switch daemon(s) to %s:%d over TLS", len(paths), address, port)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def main(argv: list[str]) -> None:
    ns_fd, address, port, ca, cert, key, *paths = argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    asyncio.run(_serve(int(ns_fd), address, int(port), ctx, paths))


if __name__ == "__main__":
    main(sys.argv[1:])
