"""Measurements on a running testbed with real tools: iperf3 goodput and ping RTT, and the
share of CPU time a hypervisor took from this machine while they ran."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from testbed import lifecycle as api
from testbed.errors import NetworkError
from testbed.htb import FRAME_BYTES
from testbed.procs import cpu_jiffies

TCP_PAYLOAD_BYTES = 1448  # 1500-byte MTU minus IP (20), TCP (20) and timestamp option (12)


def ideal_goodput_mbit(line_rate_mbit: float) -> float:
    """TCP goodput of a link whose configured rate counts whole Ethernet frames."""
    return line_rate_mbit * TCP_PAYLOAD_BYTES / FRAME_BYTES


def iperf3(name: str | None, src: str, dst: str, seconds: float = 10, omit: float = 2,
           port: int = 5201, extra: list[str] | None = None) -> float:
    """Receiver-side TCP goodput in Mbit/s from src to dst over `seconds`, after `omit` seconds.

    Computed from the receiver's own per-second records (the server's, or the client's with
    `-R`, where the server sends): iperf3's end-of-test summary with -O counts the omitted bytes
    but not the omitted time, inflating low rates by ~5%, and a sender's records count what
    entered its socket buffer, not what arrived.
    """
    reverse = "-R" in (extra or [])
    dst_ip = api.status(name)["nodes"][dst]["ip"]
    server_argv = ["iperf3", "-s", "-1", "-J", "-p", str(port)]
    if api.on_cluster_host(api.resolve(name), dst):  # its host (maybe another machine) runs it
        return _iperf3_on_hosts(name, src, dst, dst_ip, server_argv, seconds, omit, extra)
    server = api.popen(name, dst, server_argv, stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True)
    try:
        res = _client(name, src, dst, dst_ip, port, seconds, omit, [
            *(["-J"] if reverse else []), *(extra or [])])
        server_out = server.communicate(timeout=30)[0]
        report = json.loads(res.stdout if reverse else server_out)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return goodput_mbit(report, omit, seconds)


def _client(name: str | None, src: str, dst: str, dst_ip: str, port: int, seconds: float,
            omit: float, extra: list[str]) -> subprocess.CompletedProcess:
    res = None
    for _ in range(50):  # the server needs a moment to listen
        res = api.run_in_node(name, src, ["iperf3", "-c", dst_ip, "-p", str(port), "-t",
                                          str(int(seconds + omit + 1)), *extra],
                              timeout=seconds + omit + 30)
        if res.returncode == 0 and not _refused(res.stdout, extra):
            return res
        time.sleep(0.1)
    raise NetworkError(f"iperf3 {src}->{dst} failed: {(res.stdout or '')[-300:]}")


def _refused(stdout: str, extra: list[str]) -> bool:
    """Whether a client with -J could not even start its test (it exits 0 then, the error
    in its report)."""
    if "-J" not in extra:
        return False
    try:
        return "error" in json.loads(stdout)
    except json.JSONDecodeError:
        return True


def _iperf3_on_hosts(name: str | None, src: str, dst: str, dst_ip: str, server_argv: list[str],
                     seconds: float, omit: float, extra: list[str] | None) -> float:
    """iperf3 when the server's node is on a host of a cluster: the host's Ray node runs the
    server (from a thread here: it ends after one client, or 20 s without one), and the
    receiver's records come back inside the client's report (--get-server-output)."""
    import threading

    limit = seconds + omit + 60
    threading.Thread(target=api.run_in_node, daemon=True, kwargs={
        "name": name, "node": dst, "argv": [*server_argv, "--idle-timeout", "20"],
        "timeout": limit}).start()
    port = int(server_argv[server_argv.index("-p") + 1])
    reverse = "-R" in (extra or [])
    res = _client(name, src, dst, dst_ip, port, seconds, omit,
                  ["-J", *([] if reverse else ["--get-server-output"]), *(extra or [])])
    report = json.loads(res.stdout)
    return goodput_mbit(report if reverse else report["server_output_json"], omit, seconds)


def goodput_mbit(report: dict, omit: float, seconds: float) -> float:
    """Goodput over [omit, omit + seconds]: the median of the receiver's per-second records.

    The median, not bytes over time: under load the userspace switch or the receiving process
    can stall for a fraction of a second and then deliver what queued meanwhile, moving bytes
    from one second into the next (1.2 then 4.5 Mbit/s on a flow exactly held to 2.87 by its
    shaper, every other second 2.86-2.87). A mean over a window that starts between the two
    reads the catch-up without the stall; the median of steady seconds reads the shaper.
    """
    window = [iv["sum"] for iv in report["intervals"]
              if iv["sum"]["start"] >= omit - 1e-3 and iv["sum"]["end"] <= omit + seconds + 0.05
              and iv["sum"]["seconds"] > 0.5]
    if not window:
        raise NetworkError("iperf3: no receiver records in the measurement window")
    return statistics.median(iv["bytes"] * 8 / iv["seconds"] for iv in window) / 1e6


@dataclass
class Steal:
    """CPU time the hypervisor gave to other guests while a block ran, as a share of all this
    machine's CPU time then (0 on bare metal). Emulated links are forwarded by processes on
    this machine's CPUs: in a second with a third of them stolen, a userspace switch falls
    behind and a shaped flow reads below its rate for reasons no setting of ours explains."""

    share: float = 0.0


@contextmanager
def cpu_steal() -> Iterator[Steal]:
    """Measure the hypervisor's steal over the `with` block: `with cpu_steal() as s: ...`,
    then `s.share`."""
    out = Steal()
    stolen0, _, total0 = cpu_jiffies()
    try:
        yield out
    finally:
        stolen1, _, total1 = cpu_jiffies()
        out.share = (stolen1 - stolen0) / max(1, total1 - total0)


def ping_ms(name: str | None, src: str, dst: str, count: int = 10) -> float:
    """Average ping RTT in ms."""
    dst_ip = api.status(name)["nodes"][dst]["ip"]
    res = api.run_in_node(name, src, ["ping", "-c", str(count), "-i", "0.2", "-q", dst_ip],
                          timeout=60)
    for line in res.stdout.splitlines():
        if "min/avg/max" in line:
            return float(line.split("=")[1].split("/")[1])
    raise NetworkError(f"ping {src}->{dst} failed: {res.stdout[-200:]}")
