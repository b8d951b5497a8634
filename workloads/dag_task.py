"""One task of a DAG job, run as its own process on its node (stdlib only; torch optional).

    python dag_task.py CONFIG.json

Roles: the `source` replays items (frames) of `input_bytes` to the entry tasks, at most
`window` items in flight and at most `rate_fps`; a task receives one message per input per
item, computes, and sends its outputs; a sink (no successors) acknowledges every item to the
source. Items carry real bytes of the planned sizes. Every event is appended to this task's
trace file as CSV: `ts_ns,item,event,peer,bytes` (event: emit, recv, start, end, sent, ack,
done, error). A broken connection or a failed computation is an `error` line and exit code 3.

Compute modes: `synthetic` spins a calibrated loop for the planned work (giga-operations at
the host's per-core speed, so a node's CPU quota stretches it as the model says); `torch`
runs real forward passes of the named model with random weights.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import threading
import time

HEADER = struct.Struct("!4sQI")  # magic, item id, payload length
MAGIC = b"TBIT"
ACK = struct.Struct("!4sQ")


class Trace:
    def __init__(self, path: str) -> None:
        self.f = open(path, "a", buffering=1)  # noqa: SIM115 (kept for the process's life)
        self.lock = threading.Lock()

    def __call__(self, item: int, event: str, peer: str = "", nbytes: int = 0) -> None:
        with self.lock:
            self.f.write(f"{time.time_ns()},{item},{event},{peer},{nbytes}\n")


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError("connection closed by peer")
        got += k
    return bytes(buf)


def send_item(sock: socket.socket, item: int, payload: bytes) -> None:
    sock.sendall(HEADER.pack(MAGIC, item, len(payload)) + payload)


def recv_item(sock: socket.socket) -> tuple[int, int]:
    magic, item, length = HEADER.unpack(recv_exact(sock, HEADER.size))
    if magic != MAGIC:
        raise ConnectionError("bad message header")
    recv_exact(sock, length)
    return item, length


def connect(host: str, port: int, sport: int | None = None,
            timeout_s: float = 30.0) -> socket.socket:
    """Connect (retrying while the peer starts), from a fixed source port when given: the
    network steers each flow by its 5-tuple."""
    deadline = time.monotonic() + timeout_s
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if sport:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("0.0.0.0", sport))
            s.settimeout(5)
            s.connect((host, port))
            s.settimeout(None)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# ---- compute -----------------------------------------------------------------------------
def spin(iterations: int) -> int:
    x = 0
    for i in range(iterations):
        x = (x + i * i) & 0xFFFF
    return x


def calibrate_spin(seconds: float = 0.8) -> float:
    """Loop iterations per second of this process, over several CFS periods (100 ms) so that
    a CPU quota shows in the result."""
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        spin(50_000)
        n += 50_000
    return n / (time.perf_counter() - t0)


RESNET18_GOP_224 = 3.64  # 1.82 GMAC per 224x224 image


def calibrate_torch() -> float:
    """Giga-operations per second of one thread running ResNet-18 at 224x224 (real convs)."""
    import torch
    from models import build

    torch.set_num_threads(1)
    model, x = build("resnet18", 224)
    with torch.no_grad():
        model(x)
        t0 = time.perf_counter()
        for _ in range(3):
            model(x)
    return 3 * RESNET18_GOP_224 / (time.perf_counter() - t0)


class Compute:
    """A task's per-item computation: the named torch model in `torch` mode, otherwise (and
    for tasks without a model) the calibrated spin loop for the planned work."""

    def __init__(self, cfg: dict) -> None:
        self.work = cfg.get("work_gops", 0.0)
        self.model = None
        if cfg.get("compute") == "torch" and cfg.get("model"):
            import torch
            from models import build  # workloads/models.py, shipped beside this file

            torch.set_num_threads(max(1, int(cfg.get("cpu_cores") or 1)))
            self.model, self.example = build(cfg["model"], cfg.get("resolution"))
        # iterations per giga-operation, from the runner's calibration on a whole core:
        # gops_per_core giga-operations take one core-second
        self.iterations = int(self.work * cfg["spin_per_s"] / cfg["gops_per_core"])

    def __call__(self) -> None:
        if self.model is not None:
            import torch

            with torch.no_grad():
                self.model(self.example)
        elif self.work > 0:
            spin(self.iterations)


# ---- roles -------------------------------------------------------------------------------
def run_source(cfg: dict, trace: Trace) -> None:
    outs = [(o, connect(o["host"], o["port"], o.get("sport"))) for o in cfg["outputs"]]
    for _, s in outs:
        s.sendall(b"source".ljust(64, b"\0"))
    payloads = {o["to"]: os.urandom(o["bytes"]) for o in cfg["outputs"]}
    ack_srv = socket.create_server(("0.0.0.0", cfg["ack_port"]), backlog=64)
    window = threading.Semaphore(cfg.get("window", 2))
    sinks = cfg["sinks"]
    acks: dict[int, int] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def ack_reader(conn: socket.socket, peer: str) -> None:
        try:
            while True:
                magic, item = ACK.unpack(recv_exact(conn, ACK.size))
                with lock:
                    acks[item] = acks.get(item, 0) + 1
                    complete = acks[item] == sinks
                if complete:
                    trace(item, "done")
                    window.release()
        except (ConnectionError, OSError):
            pass

    def accept_acks() -> None:
        while not stop.is_set():
            try:
                conn, addr = ack_srv.accept()
            except OSError:
                return
            threading.Thread(target=ack_reader, args=(conn, addr[0]), daemon=True).start()

    threading.Thread(target=accept_acks, daemon=True).start()
    period = 1.0 / cfg["rate_fps"] if cfg.get("rate_fps") else 0.0
    next_t = time.monotonic()
    deadline = time.monotonic() + cfg["duration_s"]
    item = 0
    while time.monotonic() < deadline and (cfg.get("items") is None or item < cfg["items"]):
        if not window.acquire(timeout=max(0.0, deadline - time.monotonic())):
            break
        if period:
            next_t = max(next_t + period, time.monotonic())
            time.sleep(max(0.0, next_t - period - time.monotonic()))
        trace(item, "emit")
        for o, sock in outs:
            send_item(sock, item, payloads[o["to"]])
            trace(item, "sent", o["to"], o["bytes"])
        item += 1
    # let in-flight items finish (bounded), then stop
    end = time.monotonic() + cfg.get("drain_s", 10.0)
    while time.monotonic() < end:
        with lock:
            if all(acks.get(i, 0) >= sinks for i in range(item)):
                break
        time.sleep(0.05)
    stop.set()
    trace(item, "stop")
    for _, s in outs:
        s.close()


def run_task(cfg: dict, trace: Trace) -> None:
    compute = Compute(cfg)
    srv = socket.create_server(("0.0.0.0", cfg["port"]), backlog=64)
    expected = {i["from"] for i in cfg["inputs"]}
    conns: dict[str, socket.socket] = {}
    while len(conns) < len(expected):  # each predecessor says who it is first
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        name = recv_exact(conn, 64).rstrip(b"\0").decode()
        conns[name] = conn
    outs = []
    for o in cfg["outputs"]:
        s = connect(o["host"], o["port"], o.get("sport"))
        s.sendall(cfg["task"].encode().ljust(64, b"\0"))
        outs.append((o, s, os.urandom(o["bytes"])))
    ack = connect(cfg["source_host"], cfg["ack_port"]) if not cfg["outputs"] else None
    order = sorted(conns)
    while True:
        item = None
        for name in order:
            try:
                got, nbytes = recv_item(conns[name])
            except ConnectionError:
                if name == order[0] and item is None:
                    return  # clean end: the upstream closed between items
                raise
            if item is not None and got != item:
                raise ConnectionError(f"item {got} from {name} while joining item {item}")
            item = got
            trace(item, "recv", name, nbytes)
        trace(item, "start")
        compute()
        trace(item, "end")
        for o, s, payload in outs:
            send_item(s, item, payload)
            trace(item, "sent", o["to"], o["bytes"])
        if ack is not None:
            ack.sendall(ACK.pack(MAGIC, item))


def main() -> int:
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    trace = Trace(cfg["trace"])
    try:
        if cfg["role"] == "source":
            run_source(cfg, trace)
        else:
            run_task(cfg, trace)
    except Exception as e:  # recorded, never silent
        trace(-1, "error", type(e).__name__, 0)
        print(f"{cfg.get('job')}/{cfg.get('task')}: {type(e).__name__}: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] == "--calibrate":
        print(calibrate_spin())
        sys.exit(0)
    if len(sys.argv) == 2 and sys.argv[1] == "--calibrate-torch":
        print(calibrate_torch())
        sys.exit(0)
    sys.exit(main())
