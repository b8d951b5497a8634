"""Profiles taken together: starting to measure when every node is ready, and keeping a node
busy after it has answered, until the runner has every answer."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable


def hold(work: Callable[[], object], limit_s: float = 900.0) -> None:
    """Repeat `work` until stdin closes (the runner has every node's answer) or for `limit_s`:
    nodes profiled together load the machine as they will during the run, and one that
    finishes early must not leave the others measuring an idle machine."""
    closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), closed.set()), daemon=True).start()
    t0 = time.monotonic()
    while not closed.is_set() and time.monotonic() - t0 < limit_s:
        work()


def ready(together: bool) -> None:
    """With `together`, say ready (loaded and warmed up) and wait for the runner's go, given
    once every node is ready: a node still importing torch or building its model must not
    load the machine while the others measure."""
    if together:
        print(json.dumps({"ready": True}), flush=True)
        sys.stdin.readline()
