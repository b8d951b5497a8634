"""HTTP over the controller's Unix socket (`/run/testbed/<name>/api.sock`, root only).

A TCP port on 127.0.0.1 answers every local user; a socket in a 0700 directory answers root
alone, and its path does not change when the controller restarts, so a run keeps talking to a
restarted controller without learning anything new.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from pathlib import Path


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = str(path)

    def connect(self) -> None:
        """A Unix socket whose backlog is full refuses a connect with EAGAIN at once (it does
        not wait like TCP): try again until the timeout, as a busy controller is not a dead
        one."""
        deadline = time.monotonic() + (self.timeout or 0)
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            try:
                s.connect(self.path)
            except BlockingIOError:
                s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
                continue
            except OSError:
                s.close()
                raise
            self.sock = s
            return


def request(sock: Path, method: str, path: str, body: dict | None = None,
            timeout: float = 120.0) -> tuple[int, object]:
    """(HTTP status, decoded JSON answer). Raises OSError when nobody answers."""
    conn = _UnixConnection(sock, timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
    except http.client.HTTPException as e:
        raise OSError(f"bad answer from the controller: {e}") from None
    finally:
        conn.close()
    try:
        return resp.status, json.loads(raw or b"null")
    except ValueError:
        raise OSError(f"bad answer from the controller: {raw[:200]!r}") from None
