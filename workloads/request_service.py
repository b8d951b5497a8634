"""Request dispatch on a node (stdlib only; torch optional): an edge's service, or the
client side that holds the requests arriving at that edge.

    python request_service.py CONFIG.json

Role `service`: `replicas` worker processes share one FIFO queue (each computes with the
calibrated spin loop, or with `compute: torch` runs the service's model once per image).
A request arrives as a header (magic, request id, payload length, work in giga-operations)
and its payload; once all its bytes are in, it waits for a free replica, is computed, and
the answer (a few bytes) goes back on the same connection. Before serving, the service
times its own work on sizes `profile_mb` with every replica busy at once (what a period's
queue meets) and reports the times, so the runner fits the edge's time-vs-size line inside
the node (CoRaiS III-C1).

Role `client`: reads dispatch orders on stdin, one JSON object per line
(`{"id": 7, "host": "10.0.0.3", "port": 7000, "bytes": 120000, "gops": 0.8}`), sends each
request with real bytes on its own connection (all in parallel) and waits for its answer.

Both report on stdout, one JSON object per line, stamped on the node's clock: service
events `recv`, `start`, `end` (with the id) and `profile`/`ready`; client events
`connected`, `sent` and `done`. Errors go to stderr; a broken peer is reported as
`failed` for the request concerned.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import struct
import sys
import threading
import time

from dag_task import calibrate_spin, connect, recv_exact, spin

REQUEST = struct.Struct("!4sQId")  # magic, request id, payload length, giga-operations
ANSWER = struct.Struct("!4sQ")
MAGIC = b"TBRQ"
_out_lock = threading.Lock()


def report(**event) -> None:
    event.setdefault("at", time.time_ns())  # the node's clock, when it happened
    with _out_lock:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


# ---- service ------------------------------------------------------------------------------
class Work:
    """One request's computation: the calibrated spin loop for its giga-operations, or, with
    a torch model, one forward pass per image its bytes hold (`image_bytes` each)."""

    def __init__(self, cfg: dict) -> None:
        self.iters_per_gop = cfg["spin_per_s"] / cfg["gops_per_core"]
        self.model = None
        self.image_bytes = cfg.get("image_bytes", 100_000)
        if cfg.get("compute") == "torch" and cfg.get("model"):
            import torch
            from models import build  # workloads/models.py, shipped beside this file

            torch.set_num_threads(1)
            self.model, self.example = build(cfg["model"], cfg.get("resolution"))

    def __call__(self, gops: float, nbytes: int) -> None:
        if self.model is None:
            spin(int(gops * self.iters_per_gop))
            return
        import torch

        with torch.no_grad():
            for _ in range(max(1, round(nbytes / self.image_bytes))):
                self.model(self.example)


def _die_with_parent() -> None:
    """A replica ends when its service does, even after SIGKILL (Linux prctl)."""
    import contextlib
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        os._exit(0)


def _replica(jobs: mp.Queue, done: mp.Queue, cfg: dict) -> None:
    _die_with_parent()
    os.nice(10)  # the node's receiving and answering go first; replicas use what is left
    work = Work(cfg)
    while True:
        job = jobs.get()
        if job is None:
            return
        rid, gops, nbytes = job
        done.put(("start", rid, time.time_ns()))
        work(gops, nbytes)
        done.put(("end", rid, time.time_ns()))


def _profile(cfg: dict, jobs: mp.Queue, done: mp.Queue) -> list[list[float]]:
    """Seconds per request at each size with every replica computing one at once."""
    per_mb, base, n = cfg["work_per_mb"], cfg["work_base"], cfg["replicas"]
    out = []
    for mb in cfg.get("profile_mb", []):
        for _ in range(2):
            for k in range(n):
                jobs.put((-1 - k, per_mb * mb + base, int(mb * 1e6)))
            ends = {}
            while len(ends) < 2 * n:
                what, rid, ts = done.get()
                ends[(what, rid)] = ts
            for k in range(n):
                out.append([mb, (ends[("end", -1 - k)] - ends[("start", -1 - k)]) / 1e9])
    return out


def serve(cfg: dict) -> None:
    jobs, done = mp.Queue(), mp.Queue()
    workers = [mp.Process(target=_replica, args=(jobs, done, cfg), daemon=True)
               for _ in range(cfg["replicas"])]
    for w in workers:
        w.start()
    if cfg.get("profile_mb"):  # on the replicas themselves, as requests will meet them
        report(event="profile", samples=_profile(cfg, jobs, done))
    waiting: dict[int, socket.socket] = {}
    lock = threading.Lock()

    def answers() -> None:  # replicas' events -> stdout, and the answer to the client
        while True:
            what, rid, ts = done.get()
            report(event=what, id=rid, at=ts)
            if what == "end":
                with lock:
                    conn = waiting.pop(rid, None)
                if conn is not None:
                    try:
                        conn.sendall(ANSWER.pack(MAGIC, rid))
                    except OSError as e:
                        print(f"answer to request {rid}: {e}", file=sys.stderr)
                    conn.close()

    def receive(conn: socket.socket) -> None:
        try:
            magic, rid, length, gops = REQUEST.unpack(recv_exact(conn, REQUEST.size))
            if magic != MAGIC:
                raise ConnectionError("bad request header")
            recv_exact(conn, length)
        except (OSError, ConnectionError, struct.error) as e:
            print(f"receiving a request: {e}", file=sys.stderr)
            conn.close()
            return
        report(event="recv", id=rid)
        with lock:
            waiting[rid] = conn
        jobs.put((rid, gops, length))

    threading.Thread(target=answers, daemon=True).start()
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("0.0.0.0", cfg["port"]))
    lsock.listen(1024)
    report(event="ready", port=cfg["port"])
    while True:
        conn, _ = lsock.accept()
        threading.Thread(target=receive, args=(conn,), daemon=True).start()


# ---- client -------------------------------------------------------------------------------
def _send(order: dict, payload: bytes) -> None:
    rid = order["id"]
    try:
        sock = connect(order["host"], order["port"], timeout_s=10)
        report(event="connected", id=rid)
        with sock:
            sock.sendall(REQUEST.pack(MAGIC, rid, order["bytes"], order["gops"]))
            sock.sendall(payload[:order["bytes"]])
            report(event="sent", id=rid)
            magic, got = ANSWER.unpack(recv_exact(sock, ANSWER.size))
            if magic != MAGIC or got != rid:
                raise ConnectionError("bad answer")
        report(event="done", id=rid)
    except (OSError, ConnectionError) as e:
        report(event="failed", id=rid, reason=str(e))


def client(cfg: dict) -> None:
    payload = os.urandom(cfg["max_bytes"])  # real bytes, incompressible
    report(event="ready")
    for line in sys.stdin:
        if line.strip():
            order = json.loads(line)
            threading.Thread(target=_send, args=(order, payload), daemon=True).start()


def main() -> None:
    if len(sys.argv) == 2 and sys.argv[1] == "--calibrate":
        print(calibrate_spin())
        return
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    {"service": serve, "client": client}[cfg["role"]](cfg)


if __name__ == "__main__":
    main()
