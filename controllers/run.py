"""Entry point of the controller process: os-ken with FabricApp, plus the flow API over HTTP.

    python -m controllers.run STATE_DIR OF_PORT [TLS_PORT]

OpenFlow listens on 127.0.0.1:OF_PORT and accepts a connection only when the process at the
other end runs as root (the testbed's own ovs-vswitchd): any other local user is cut off
before it can claim a switch's datapath id. It also listens on the Unix socket
STATE_DIR/of.sock (root only, like the API) for the switch daemons that run in namespaces of
their own (testbed/net/shards.py): a socket path reaches across network namespaces. With
TLS_PORT, switches of a split topology's hosts connect over TLS on that port from their
hosts' relays (testbed/net/ofrelay.py), each proving itself with a certificate of the
testbed's own CA (testbed/net/tls.py). The flow
API is HTTP over the Unix socket STATE_DIR/api.sock (mode 0600 in a 0700 directory: root
only). See docs/flow-api.md.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from testbed.errors import FlowError
from testbed.routing import FlowSpec


def make_handler(app):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):  # keep the controller log for OpenFlow events
            pass

        def _send(self, code: int, body) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(n) or b"{}")

        def _guard(self, fn):
            try:
                self._send(200, fn())
            except FlowError as e:
                self._send(400, {"error": str(e)})
            except (ValueError, KeyError, TypeError) as e:
                self._send(400, {"error": f"bad request: {e}"})
            except RuntimeError as e:
                self._send(503, {"error": str(e)})

        def do_GET(self):
            routes = {"/health": app.health, "/flows": app.flow_counters,
                      "/ports": app.port_counters}
            fn = routes.get(self.path)
            if fn is None:
                self._send(404, {"error": f"no such resource {self.path}"})
            else:
                self._guard(fn)

        def do_POST(self):
            if self.path != "/flows":
                return self._send(404, {"error": f"no such resource {self.path}"})

            def add():
                specs = [FlowSpec.from_dict(f) for f in self._body().get("flows", [])]
                return {"flows": [f.to_dict() for f in app.add_flows(specs)]}

            self._guard(add)

        def do_DELETE(self):
            if self.path == "/flows":
                self._guard(lambda: {"removed": app.remove_flows(list(app.flows))})
            elif self.path.startswith("/flows/") and self.path[7:].isdigit():
                fid = int(self.path[7:])

                def rm():
                    if fid not in app.flows:
                        raise FlowError(f"no flow with id {fid}")
                    return {"removed": app.remove_flows([fid])}

                self._guard(rm)
            else:
                self._send(404, {"error": f"no such resource {self.path}"})

    return Handler


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    # socketserver's default backlog is 5: a sixth client connecting at the same moment (a
    # campaign's trials, a run's threads) got EAGAIN on a Unix socket instead of waiting
    request_queue_size = 128

    def get_request(self):  # BaseHTTPRequestHandler expects an address tuple
        conn, _ = super().get_request()
        return conn, ("local", 0)


def serve_api(app, path: Path) -> UnixHTTPServer:
    """The flow API on a Unix socket only root can open."""
    path.unlink(missing_ok=True)
    old = os.umask(0o177)
    try:
        server = UnixHTTPServer(str(path), make_handler(app))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def loopback_peer_uid(local_port: int, peer_port: int) -> int | None:
    """Owner uid of the TCP socket 127.0.0.1:peer_port connected to 127.0.0.1:local_port."""
    want_local = f"0100007F:{peer_port:04X}"
    want_remote = f"0100007F:{local_port:04X}"
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] == want_local and fields[2] == want_remote:
                return int(fields[7])
    return None


def only_root_peers(of_port: int):
    """Wrap os-ken's connection handler: close connections from non-root processes at once.
    Returns the handler it wrapped (for connections proven another way)."""
    from os_ken.controller import controller

    inner = controller.datapath_connection_factory
    log = logging.getLogger("testbed.controller")

    def guarded(sock, address):
        if str(address[0]).startswith("/"):  # of.sock: mode 0600 in a 0700 directory
            return inner(sock, address)
        uid = loopback_peer_uid(of_port, address[1]) if address[0] == "127.0.0.1" else None
        if uid != 0:
            log.warning("refused an OpenFlow connection from %s (uid %s): only the testbed's "
                        "switches (root) may connect", address, uid)
            sock.close()
            return
        return inner(sock, address)

    controller.datapath_connection_factory = guarded
    return inner


class _UnixStream:
    """A Unix stream socket as os-ken's Datapath uses a TCP one: TCP options are ignored."""

    def __init__(self, sock) -> None:
        self._sock = sock

    def setsockopt(self, level, *args):
        import socket

        if level != socket.IPPROTO_TCP:
            return self._sock.setsockopt(level, *args)
        return None

    def __getattr__(self, name):
        return getattr(self._sock, name)


def serve_openflow_unix(path: Path) -> None:
    """Accept switches on a Unix socket and hand each to os-ken like a TCP connection."""
    import socket

    import eventlet
    from os_ken.controller import controller
    from os_ken.lib import hub

    path.unlink(missing_ok=True)
    old = os.umask(0o177)
    try:
        server = eventlet.listen(str(path), family=socket.AF_UNIX, backlog=1024)
    finally:
        os.umask(old)

    def loop() -> None:
        while True:
            sock, _ = server.accept()
            hub.spawn(controller.datapath_connection_factory, _UnixStream(sock),
                      (str(path), 0))

    hub.spawn(loop)


def serve_openflow_tls(port: int, tls_dir: Path, handler) -> None:
    """Accept switches of other hosts over TLS on every address, port `port`: only with a host
    certificate of this testbed's CA (testbed/net/tls.py). TLS ends here, in one asyncio
    loop; os-ken gets the plain stream through a socket pair (so no TLS object is ever read
    and written from two threads)."""
    import asyncio
    import socket
    import ssl

    from os_ken.lib import hub

    from testbed.net.ofrelay import splice

    log = logging.getLogger("testbed.controller")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls_dir / "controller.crt", tls_dir / "controller.key")
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(tls_dir / "ca.crt")

    async def switch(sock: socket.socket, peer) -> None:
        # the handshake is done on the raw accepted socket: no plain reader can swallow the
        # client's first TLS bytes before TLS starts
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol, sock, ssl=ctx, ssl_handshake_timeout=10)
        except (TimeoutError, ssl.SSLError, OSError) as e:
            log.warning("refused an OpenFlow TLS connection from %s: %s", peer,
                        str(e) or type(e).__name__)
            sock.close()
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        subject = dict(f[0] for f in writer.get_extra_info("peercert")["subject"])
        log.info("switch connection over TLS from %s (%s)", peer, subject.get("commonName"))
        ours, theirs = socket.socketpair()
        hub.spawn(handler, _UnixStream(ours), (f"tls:{peer[0]}", peer[1]))
        await splice((reader, writer), await asyncio.open_connection(sock=theirs))

    async def serve() -> None:
        server = socket.create_server(("0.0.0.0", port), backlog=1024, reuse_port=False)
        server.setblocking(False)
        loop = asyncio.get_running_loop()
        tasks = set()  # keep a reference to every connection's task while it runs
        while True:
            sock, peer = await loop.sock_accept(server)
            task = asyncio.create_task(switch(sock, peer))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    threading.Thread(target=lambda: asyncio.run(serve()), daemon=True).start()


def main() -> None:
    state_dir, of_port = sys.argv[1], int(sys.argv[2])
    tls_port = int(sys.argv[3]) if len(sys.argv) > 3 else None
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # nothing to flush: flows.json is atomic
    os.environ["TESTBED_STATE_DIR"] = state_dir
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from os_ken import cfg
    from os_ken.base.app_manager import AppManager
    from os_ken.lib import hub

    cfg.CONF(args=["--ofp-listen-host", "127.0.0.1", "--ofp-tcp-listen-port", str(of_port)],
             project="os_ken")
    plain = only_root_peers(of_port)
    mgr = AppManager.get_instance()
    mgr.load_apps(["controllers.fabric_app"])
    services = mgr.instantiate_apps(**mgr.create_contexts())
    app = next(a for a in mgr.applications.values() if type(a).__name__ == "FabricApp")
    sock = Path(state_dir) / "api.sock"
    serve_api(app, sock)
    serve_openflow_unix(Path(state_dir) / "of.sock")
    if tls_port:  # switches on the hosts of a split topology
        serve_openflow_tls(tls_port, Path(state_dir) / "tls", plain)
    logging.getLogger("testbed.controller").info("flow API on %s", sock)
    hub.joinall(services)


if __name__ == "__main__":
    main()
