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


def with_argv(prefix: list[str]) -> set[int]:
    """Live processes whose command line, after the program, starts with `prefix`: how teardown
    finds a child whose pid its parent was killed before recording."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if [a.decode(errors="replace") for a in argv[1:1 + len(prefix)]] == prefix and \
                process_start_ticks(int(entry.name)) is not None:
            found.add(int(entry.name))
    return found


def cpu_jiffies() -> tuple[int, int, int]:
    """(stolen, idle, total) CPU time of this machine since boot, in jiffies, from the `cpu`
    line of /proc/stat: steal is what the hypervisor gave other guests, idle includes iowait."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    stolen = fields[7] if len(fields) > 7 else 0
    return stolen, fields[3] + fields[4], sum(fields[:8])  # guest is counted in user and nice
