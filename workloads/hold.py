"""Keeping a node busy after it has answered a profile, until the runner has every answer."""

from __future__ import annotations

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
