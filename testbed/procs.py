"""Telling a live process from a gone one by /proc alone, for the parts that clean up after
processes that may have been killed (the ledger's records, Ray workers' scratch directories)."""

from __future__ import annotations

from pathlib import Path


def process_start_ticks(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot), or None if it is gone. A zombie counts as
    gone even while nobody has reaped it yet: a SIGKILLed worker is one until its parent
    notices."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])
