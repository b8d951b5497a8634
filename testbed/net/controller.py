"""The os-ken controller process of a testbed: started detached (it outlives `testbed up`),
checked through its API socket, and restarted when dead or stuck (switches keep forwarding
meanwhile; the new controller re-installs the recorded flows)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from testbed.errors import NetworkError
from testbed.net import apisock, ovs, shards
from testbed.net.ledger import Ledger, ProcessRecord

CONTROLLER_READY_TIMEOUT_S = 120.0
CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def controller_argv(state_dir: Path) -> list[str]:
    """The controller's command line after the interpreter: naming the state directory makes
    it findable in /proc when `up` is killed between spawning it and recording its pid."""
    return ["-m", "controllers.run", str(state_dir)]


def start_controller(ledger: Ledger) -> None:
    """Start the os-ken controller as a detached process that outlives `testbed up` (with a
    TLS port for other hosts' switches when the ledger has one: it keeps it across restarts,
    so the hosts' relays need not be told)."""
    log = open(ledger.names.state_dir / "controller.log", "ab")  # noqa: SIM115 (child keeps it)
    proc = subprocess.Popen(
        [sys.executable, *controller_argv(ledger.names.state_dir), str(ledger.of_port),
         *([str(tls)] if (tls := ledger.extra.get("controller_tls_port")) else [])],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        cwd=CHECKOUT)
    log.close()
    ledger.controller = ProcessRecord.of(proc.pid)
    ledger.save()


def controller_health(ledger: Ledger, timeout: float = 2.0) -> dict | None:
    try:
        code, body = apisock.request(ledger.names.api_socket, "GET", "/health", timeout=timeout)
    except OSError:
        return None
    return body if code == 200 and isinstance(body, dict) else None


def wait_controller_ready(ledger: Ledger) -> None:
    deadline = time.monotonic() + CONTROLLER_READY_TIMEOUT_S
    health = None
    while time.monotonic() < deadline:
        if ledger.controller and not ledger.controller.alive():
            log = (ledger.names.state_dir / "controller.log").read_text()[-1500:]
            raise NetworkError(f"the controller exited during start-up:\n{log}")
        health = controller_health(ledger)
        if health and health["ready"] == health["expected"]:
            return
        time.sleep(0.1)
    raise NetworkError(f"the controller did not configure all switches in "
                       f"{CONTROLLER_READY_TIMEOUT_S:.0f}s (last health: {health})")


def controller_ok(ledger: Ledger) -> bool:
    """The controller runs, answers and has every switch configured."""
    if not (ledger.controller and ledger.controller.alive()):
        return False
    health = controller_health(ledger)
    return bool(health and health["ready"] == health["expected"])


def ensure_controller(ledger: Ledger, patience_s: float = 3.0) -> bool:
    """Restart the controller if it is dead, or alive but not answering or stuck with a switch
    unconfigured for `patience_s`; returns whether it was restarted."""
    deadline = time.monotonic() + patience_s
    while not controller_ok(ledger):
        if not (ledger.controller and ledger.controller.alive()) or \
                time.monotonic() > deadline:
            restart_controller(ledger)
            return True
        time.sleep(0.1)
    return False


def restart_controller(ledger: Ledger) -> None:
    """Start a fresh controller for a running network (flows are re-installed from its file).
    The API socket keeps its path, so clients reach the new controller without being told."""
    if ledger.controller and ledger.controller.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(ledger.controller.pid, 9)
        for _ in range(100):
            if not ledger.controller.alive():
                break
            time.sleep(0.02)
    ledger.of_port = free_port()
    names = ledger.names
    on_host = [names.bridge(i) for i, node in enumerate(ledger.topology["nodes"])
               if not shards.of_node(ledger.extra, node)]  # the others use of.sock (no change)
    ovs.set_controller(on_host, f"tcp:127.0.0.1:{ledger.of_port}")
    start_controller(ledger)
    wait_controller_ready(ledger)
