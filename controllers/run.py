"""Entry point of the controller process: os-ken with FabricApp, plus the flow API over HTTP.

    python -m controllers.run STATE_DIR OF_PORT API_PORT

Both listen on 127.0.0.1 only. The API is documented in docs/flow-api.md.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


def main() -> None:
    state_dir, of_port, api_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # nothing to flush: flows.json is atomic
    os.environ["TESTBED_STATE_DIR"] = state_dir
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from os_ken import cfg
    from os_ken.base.app_manager import AppManager
    from os_ken.lib import hub

    cfg.CONF(args=["--ofp-listen-host", "127.0.0.1", "--ofp-tcp-listen-port", str(of_port)],
             project="os_ken")
    mgr = AppManager.get_instance()
    mgr.load_apps(["controllers.fabric_app"])
    services = mgr.instantiate_apps(**mgr.create_contexts())
    app = next(a for a in mgr.applications.values() if type(a).__name__ == "FabricApp")
    server = ThreadingHTTPServer(("127.0.0.1", api_port), make_handler(app))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    logging.getLogger("testbed.controller").info("flow API on 127.0.0.1:%d", api_port)
    hub.joinall(services)


if __name__ == "__main__":
    main()
