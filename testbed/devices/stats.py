"""Device statistics: CPU and memory from /proc, and on Jetsons `tegrastats` (GPU load, EMC,
temperatures, power rails), sampled over SSH at a set interval into records whose timestamps
are on the testbed's clock: the device's clock offset is measured (NTP-style, over the SSH
round trip) and subtracted, and the offset and its uncertainty are recorded with every sample.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

from testbed.devices.ssh import Session, quote

SAMPLE = ("date +%s.%N; head -1 /proc/stat; grep -E '^(MemTotal|MemAvailable):' /proc/meminfo; "
          "if command -v tegrastats >/dev/null; then echo TEGRA; timeout 3 tegrastats "
          "--interval 1000 2>/dev/null | head -1; fi")


@dataclass(frozen=True)
class ClockOffset:
    offset_s: float  # device clock minus testbed clock
    uncertainty_s: float  # half the round trip of the best probe


ECHO_TIME = "import sys, time\nfor _ in sys.stdin:\n    print(repr(time.time()), flush=True)"


def clock_offset(session: Session, probes: int = 10) -> ClockOffset:
    """The device's clock offset from the best (shortest round trip) of a few probes, each a
    line through one open channel to a Python loop on the device that answers with its time
    (a new command per probe would add ~100 ms of process start to the round trip)."""
    chan = session.ensure().get_transport().open_session()
    chan.settimeout(10)
    try:
        chan.exec_command(f"python3 -u -c {quote([ECHO_TIME])}")
        f = chan.makefile("r")
        best: ClockOffset | None = None
        for _ in range(probes):
            t0 = time.time()
            chan.sendall(b"?\n")
            remote = float(f.readline())
            t1 = time.time()
            est = ClockOffset(remote - (t0 + t1) / 2, (t1 - t0) / 2)
            if best is None or est.uncertainty_s < best.uncertainty_s:
                best = est
        return best
    finally:
        chan.close()


_RAM = re.compile(r"RAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"SWAP (\d+)/(\d+)MB")
_CPU = re.compile(r"CPU \[([^\]]*)\]")
_PERCENT = re.compile(r"(\d+)%(?:@(\d+))?")
_GPU = re.compile(r"GR3D_FREQ (\d+)%")
_EMC = re.compile(r"EMC_FREQ (\d+)%")
_TEMP = re.compile(r"\b([A-Za-z][\w]*)@(-?[\d.]+)C\b")
# power rails: "VDD_IN 4597/4597" (mW, JetPack 4) or "VDD_GPU_SOC 2779mW/2779mW" (JetPack 5+)
_RAIL = re.compile(r"\b((?:VDD|POM|VIN)_[A-Z0-9_]+) (\d+)(?:mW)?/(\d+)(?:mW)?")


def parse_tegrastats(line: str) -> dict:
    """One tegrastats line -> flat record: ram/swap MB, per-core CPU %, GPU and EMC load %,
    temperatures (C) and power rails (instant and average mW). Missing parts are omitted."""
    rec: dict = {}
    if m := _RAM.search(line):
        rec["ram_used_mb"], rec["ram_total_mb"] = int(m[1]), int(m[2])
    if m := _SWAP.search(line):
        rec["swap_used_mb"], rec["swap_total_mb"] = int(m[1]), int(m[2])
    if m := _CPU.search(line):
        cores = m[1].split(",")
        loads = [int(p[1]) for c in cores if (p := _PERCENT.match(c.strip()))]
        rec["cpu_cores_online"] = len(loads)
        rec["cpu_cores"] = len(cores)
        if loads:
            rec["cpu_pct"] = sum(loads) / len(loads)
        for i, c in enumerate(cores):
            if p := _PERCENT.match(c.strip()):
                rec[f"cpu{i}_pct"] = int(p[1])
                if p[2]:
                    rec[f"cpu{i}_mhz"] = int(p[2])
    if m := _GPU.search(line):
        rec["gpu_pct"] = int(m[1])
    if m := _EMC.search(line):
        rec["emc_pct"] = int(m[1])
    for name, value in _TEMP.findall(line):
        if float(value) > -200:  # -256C marks a sensor that is off
            rec[f"temp_{name.lower()}_c"] = float(value)
    for name, now, avg in _RAIL.findall(line):
        rec[f"power_{name.lower()}_mw"] = int(now)
        rec[f"power_{name.lower()}_avg_mw"] = int(avg)
    return rec


def parse_sample(text: str, previous_cpu: tuple[int, int] | None = None,
                 ) -> tuple[dict, tuple[int, int]]:
    """The output of SAMPLE -> (record with device time, CPU busy % since `previous_cpu`,
    memory; plus tegrastats fields), and the CPU counters for the next call."""
    lines = text.splitlines()
    rec: dict = {"device_time_s": float(lines[0])}
    fields = [int(x) for x in lines[1].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    if previous_cpu is not None and total > previous_cpu[1]:
        rec["cpu_pct"] = 100.0 * (1 - (idle - previous_cpu[0]) / (total - previous_cpu[1]))
    mem = {k.rstrip(":"): int(v) for k, v, *_ in (ln.split() for ln in lines[2:4])}
    rec["mem_total_mb"] = mem.get("MemTotal", 0) * 1024 / 1e6  # /proc/meminfo's kB are KiB
    rec["mem_used_mb"] = (mem.get("MemTotal", 0) - mem.get("MemAvailable", 0)) * 1024 / 1e6
    if "TEGRA" in lines and lines.index("TEGRA") + 1 < len(lines):
        tegra = parse_tegrastats(lines[lines.index("TEGRA") + 1])
        tegra.pop("cpu_pct", None)  # /proc/stat's figure covers the whole interval
        rec.update(tegra)
    return rec, (idle, total)


class Collector:
    """Samples one device every `interval_s` in a background thread until stopped.

    Records carry `t_s` (testbed clock, seconds since the epoch), the device's own time, and
    the offset used. A sample that fails (connection lost) is recorded as an error row and the
    session reconnects with backoff on the next one.
    """

    def __init__(self, session: Session, interval_s: float = 1.0,
                 max_samples: int = 100_000) -> None:
        self.session, self.interval_s, self.max_samples = session, interval_s, max_samples
        self.records: list[dict] = []
        self.offset = clock_offset(session)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> Collector:
        self._thread.start()
        return self

    def stop(self) -> list[dict]:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.records

    def _loop(self) -> None:
        prev = None
        node = self.session.ep.node
        while not self._stop.is_set() and len(self.records) < self.max_samples:
            start = time.monotonic()
            try:
                rec, prev = parse_sample(self.session.run(SAMPLE, timeout=15).out, prev)
                rec["t_s"] = rec["device_time_s"] - self.offset.offset_s
            except Exception as e:  # recorded: a gap in the trace says why
                rec, prev = {"t_s": time.time(), "error": f"{type(e).__name__}: {e}"}, None
            rec.update(node=node, clock_offset_s=self.offset.offset_s,
                       clock_uncertainty_s=self.offset.uncertainty_s)
            self.records.append(rec)
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - start)))
