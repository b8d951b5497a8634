"""Split federated learning on a node, one process per role (config file as the argument):

- profile: per-block forward and backward seconds at the batch size, measured here (the
  node's cgroup, container or board), with each block's activation and parameter bytes;
- device: trains blocks 1..cut on its data partition; per batch it sends the activations at
  the cut (and the labels) to the server and gets their gradients back; at the round's end it
  sends its blocks' weights for FedAvg and receives the averaged ones before the next round;
- server: runs blocks cut+1..N for every device (see Server for the three modes), on one port
  per device; after every round it averages each block over all holders, tests the averaged
  model and writes one trace line per round and device, with the round's peak active memory
  (ActiveMemory) beside the process's peak RSS.

Messages are length-prefixed torch.save dicts of tensors (loaded with weights_only).
Standard library + torch only: boards and images run this file.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import io
import itertools
import json
import mmap
import multiprocessing
import os
import queue
import resource
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time

import torch
from hold import hold, ready
from split_models import blocks
from torch import nn


# ---- messages ------------------------------------------------------------------------------
def send(sock: socket.socket, obj: dict) -> int:
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    sock.sendall(struct.pack("!Q", len(data)) + data)
    return len(data) + 8


def recv(sock: socket.socket) -> tuple[dict, int]:
    (n,) = struct.unpack("!Q", _exact(sock, 8))
    return torch.load(io.BytesIO(_exact(sock, n)), weights_only=True), n + 8


def _exact(sock: socket.socket, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise ConnectionError("peer closed the connection")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


# ---- data ----------------------------------------------------------------------------------
def images(cfg: dict, shape: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """The process's samples at the model's input shape: 8x8 digits scaled up, or seeded
    synthetic images."""
    if cfg.get("x") is not None:
        x = torch.tensor(cfg["x"], dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
        x = nn.functional.interpolate(x, size=shape[1:], mode="bilinear", align_corners=False)
        x = x.repeat(1, shape[0], 1, 1)
        return (x - 0.3) / 0.4, torch.tensor(cfg["y"], dtype=torch.long)
    g = torch.Generator().manual_seed(int(cfg.get("seed", 0)))
    n = int(cfg.get("samples", 256))
    return torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)


def model_blocks(cfg: dict) -> tuple[list[nn.Module], tuple]:
    """The run's model at its width (see split_models: `scale: {work}`)."""
    return blocks(cfg["model"], width=float(cfg.get("width", 1.0)))


def block_state(bs: list[nn.Module], lo: int, hi: int) -> dict:
    """Blocks lo..hi-1's weights (buffers included) keyed by block index."""
    return {f"{k}.{name}": t.detach().clone() for k in range(lo, hi)
            for name, t in bs[k].state_dict().items()}


def load_state(bs: list[nn.Module], state: dict) -> None:
    per: dict[int, dict] = {}
    for key, t in state.items():
        k, _, name = key.partition(".")
        per.setdefault(int(k), {})[name] = t
    for k, s in per.items():
        bs[k].load_state_dict(s)


def forward(bs: list[nn.Module], x: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    for k in range(lo, hi):
        x = bs[k](x)
    return x


def join_cpu_slice(procs: str | None) -> None:
    """Move this process into its CPU slice of the node (server_share: per-device), before it
    starts torch's threads: the runner made the slice and its cgroup.procs writable for us."""
    if procs:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))


def cpu_cgroup() -> str:
    """This process's CPU cgroup (where its CPU time is capped), from /proc/self/cgroup."""
    with open("/proc/self/cgroup") as f:
        lines = [ln.strip().split(":", 2) for ln in f]
    return next((path for _, ctl, path in lines if "cpu" in ctl.split(",")),
                next((path for _, ctl, path in lines if ctl == ""), ""))


# ---- roles ---------------------------------------------------------------------------------
def profile(cfg: dict) -> tuple[dict, object]:
    """Per-block seconds of one batch as this node delivers them over time, and the work to
    keep the node busy with afterwards. Each block is timed on its own (medians: their shares
    of a pass), and the passes are timed together over at least `budget_s` of wall time: under
    a CPU quota a short computation runs at full speed until the quota of the period is spent
    and then waits, so single timings are too fast and only the long run's rate counts.

    Three loads, each as the run will put it on the node:
    - busy (default): passes of every block back to back;
    - `duty` below 1: a pass, then idle for pass time x (1 - duty) / duty (a server's share);
    - `pattern` {cut, batches, batch_wait_s, round_wait_s}: a device's round as planned: per
      batch its blocks 1..cut, then the wait for the server's part and the transfers, and
      after `batches` batches the wait for the weights and the slowest device. Only blocks
      1..cut are timed (the lists are that long), each batch whole as the device runs it
      (one forward, one backward, the optimiser's step; its blocks one by one for their
      shares first): a quota spent in pieces between waits runs faster than in whole
      passes, and the loss and the optimiser's step cost the device too."""
    bs, shape = model_blocks(cfg)
    b = int(cfg["batch_size"])
    x = torch.randn(b, *shape)
    pattern = cfg.get("pattern")
    hi = int(pattern["cut"]) if pattern else len(bs)
    fwd = [[] for _ in bs[:hi]]
    bwd = [[] for _ in bs[:hi]]
    act, params = [], [sum(p.numel() * 4 for p in blk.parameters()) for blk in bs]

    def one_pass(rep: int = 0) -> float:
        t_pass = time.perf_counter()
        h = x
        for k, blk in enumerate(bs[:hi]):
            h = h.detach().requires_grad_(k > 0)
            t0 = time.perf_counter()
            out = blk(h)
            t1 = time.perf_counter()
            out.backward(torch.ones_like(out))
            t2 = time.perf_counter()
            if rep:
                fwd[k].append(t1 - t0)
                bwd[k].append(t2 - t1)
            if rep == 1:
                act.append(out.numel() * 4)
            h = out
        return time.perf_counter() - t_pass

    duty = min(1.0, max(0.01, float(cfg.get("duty", 1.0))))
    count = itertools.count(1)
    mine = nn.ModuleList(bs[:hi])
    opt = torch.optim.SGD(mine.parameters(), lr=1e-6) if hi else None
    y = torch.randint(0, 10, (b,))

    def device_pass() -> float:
        """One batch of blocks 1..cut as the device's round runs it: one forward, one
        backward from the loss or from the cut's gradient, the optimiser's step."""
        t0 = time.perf_counter()
        opt.zero_grad()
        out = forward(bs, x, 0, hi)
        if hi == len(bs):
            nn.functional.cross_entropy(out, y).backward()
        else:
            out.backward(torch.ones_like(out))
        opt.step()
        return time.perf_counter() - t0

    shares = 3 if pattern else 0  # passes timed block by block for the shares alone

    def paced_pass(rep: int = 0) -> float:
        """rep 1..: a timed pass; 0: holding the load after answering."""
        if pattern:
            took = one_pass(rep) if 0 < rep <= shares else device_pass()
            time.sleep(float(pattern["batch_wait_s"]))
            if next(count) % int(pattern["batches"]) == 0:
                time.sleep(float(pattern["round_wait_s"]))
            return took
        took = one_pass(rep)
        if duty < 1.0:
            time.sleep(took * (1.0 - duty) / duty)
        return took

    budget_s, rep, busy, t_start = float(cfg.get("budget_s", 2.0)), 0, 0.0, 0.0
    one_pass(0)  # the first pass warms up allocators and kernels
    if pattern and hi:  # and the device's own: the loss, the optimiser's first step (~1.3x)
        device_pass()
    ready(bool(cfg.get("together")))
    while rep < shares + 3 or (time.perf_counter() - t_start < budget_s and rep < 200):
        rep += 1
        if rep == shares + 1:
            t_start = time.perf_counter()
        took = paced_pass(rep)
        busy += took if rep > shares else 0.0
    per_pass = busy / (rep - shares)
    med = [sorted(v)[len(v) // 2] for v in fwd], [sorted(v)[len(v) // 2] for v in bwd]
    scale = per_pass / max(sum(med[0]) + sum(med[1]), 1e-12)
    return {"forward_s": [t * scale for t in med[0]], "backward_s": [t * scale for t in med[1]],
            "activation_bytes": act, "param_bytes": params, "pass_s": per_pass,
            "quota_factor": scale, "duty": duty, "pattern": pattern}, paced_pass


def device(cfg: dict) -> None:
    torch.set_num_threads(max(1, int(cfg.get("threads", 1))))
    bs, shape = model_blocks(cfg)
    n, cut = len(bs), int(cfg["cut"])
    x, y = images(cfg, shape)
    mine = nn.ModuleList(bs[:cut])
    opt = torch.optim.SGD(mine.parameters(), lr=cfg["lr"]) if cut else None
    g = torch.Generator().manual_seed(int(cfg.get("seed", 0)))
    sock = connect(cfg["server_ip"], int(cfg["port"]))
    trace = open(cfg["trace"], "a")  # noqa: SIM115
    for rnd in range(int(cfg["rounds"])):
        r0 = time.time()
        msg, down = recv(sock)  # the averaged weights of my blocks (round 0: the initial ones)
        load_state(bs, msg["weights"])
        compute = 0.0  # communication: what the server's clock leaves of the round
        up = 0
        for _ in range(int(cfg["batches_per_round"])):
            idx = torch.randint(0, len(x), (int(cfg["batch_size"]),), generator=g)
            xb, yb = x[idx], y[idx]
            t0 = time.perf_counter()
            if opt:
                opt.zero_grad()
            out = forward(bs, xb, 0, cut)
            if cut < n:
                t1 = time.perf_counter()
                up += send(sock, {"act": out.detach(), "y": yb})
                reply, got = recv(sock)
                down += got
                t2 = time.perf_counter()
                if cut:
                    out.backward(reply["grad"])
                t3 = time.perf_counter()
                compute += (t1 - t0) + (t3 - t2)
            else:
                nn.functional.cross_entropy(out, yb).backward()
                compute += time.perf_counter() - t0
            if opt:
                opt.step()
        up += send(sock, {"weights": block_state(bs, 0, cut), "samples": torch.tensor(len(x))})
        trace.write(json.dumps({"role": "device", "device": cfg["name"], "round": rnd,
                                "cut": cut, "start": r0, "end": time.time(),
                                "compute_s": compute, "bytes_up": up,
                                "bytes_down": down}) + "\n")
        trace.flush()
    recv(sock)  # the server's goodbye: every round is aggregated
    sock.close()


class _Held:
    """A tensor autograd saved for a backward pass, wrapped so its release can be seen: when
    autograd drops it, it tells its counter (cheaper than a weakref.finalize per tensor, which
    cost the non-pipe server's threads about a tenth of their CPU on small models)."""

    __slots__ = ("t", "key", "memory")

    def __init__(self, t: torch.Tensor, key: int, memory: ActiveMemory) -> None:
        self.t, self.key, self.memory = t, key, memory

    def __del__(self) -> None:
        self.memory._release(self.key)


class ActiveMemory:
    """The bytes the server holds for training at a time, the thesis's "active memory" on a
    CPU (where torch keeps no allocator statistics): the parameters of the server-side parts
    held in memory (set per mode) plus every tensor autograd saved for a backward pass not yet
    run, counted once per storage and released when its graph is freed. The totals live in
    shared memory, so the non-pipe server's per-device processes add up to one peak."""

    def __init__(self, params: list[torch.Tensor], held_param_bytes: int) -> None:
        ctx = multiprocessing.get_context("fork")
        self.lock = ctx.RLock()  # a release may run inside _pack (a collected cycle)
        self.params = held_param_bytes
        self.skip = {p.untyped_storage().data_ptr() for p in params}  # counted in params
        self._saved, self._peak = ctx.RawValue("q", 0), ctx.RawValue("q", held_param_bytes)
        self.refs: dict[int, list[int]] = {}  # this process's storage -> [holders, bytes]

    @property
    def peak(self) -> int:
        return self._peak.value

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def reset_peak(self) -> None:
        with self.lock:
            self._peak.value = self.params + self._saved.value

    def _pack(self, t: torch.Tensor):
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in self.skip:
            return t
        with self.lock:
            ref = self.refs.setdefault(key, [0, storage.nbytes()])
            if ref[0] == 0:
                self._saved.value += ref[1]
                self._peak.value = max(self._peak.value, self.params + self._saved.value)
            ref[0] += 1
        return _Held(t, key, self)

    @staticmethod
    def _unpack(held):
        return held.t if isinstance(held, _Held) else held

    def _release(self, key: int) -> None:
        with self.lock:
            ref = self.refs[key]
            ref[0] -= 1
            if ref[0] == 0:
                self._saved.value -= ref[1]
                del self.refs[key]


def shared_memory(bs: list[nn.Module]) -> None:
    """Move the blocks' weights and buffers into anonymous shared mappings, which forked
    processes see and write in place (not /dev/shm, which is 64 MB in a container)."""
    for b in bs:
        for t in itertools.chain(b.parameters(), b.buffers()):
            if t.numel():
                buf = mmap.mmap(-1, t.numel() * t.element_size())
                shared = torch.frombuffer(buf, dtype=t.dtype, count=t.numel()).view_as(t)
                shared.copy_(t.detach())
                t.data = shared


def sgd(params: list[torch.Tensor], grads, lr: float) -> None:
    with torch.no_grad():  # plain SGD, as on the devices
        for q, g in zip(params, grads, strict=True):
            q -= lr * g


@dataclasses.dataclass(eq=False)
class Request:
    """One batch of a device at the server: enters the pipeline at its device's cut."""

    device: str
    entry: int  # the stage its activations enter
    y: torch.Tensor
    done: queue.Queue
    compute_s: float = 0.0
    loss: float = 0.0


BACKWARD, FORWARD = 0, 1  # queue priorities: backward first
STOP = 2


class Pipeline:
    """splitpipe-bf: the server-side blocks cut into stages at the devices' distinct cuts, one
    thread per stage. A batch enters at its device's cut, runs forward stage by stage to the
    loss and then backward stage by stage back to its entry (each stage updating that
    device's parameters). Every stage runs waiting backward tasks before forward ones, so a
    batch's cached intermediates are freed as soon as possible (backward first)."""

    def __init__(self, server: Server, cuts: list[int]) -> None:
        bounds = sorted(set(cuts))
        self.server, self.n = server, server.n
        self.stages = list(zip(bounds, [*bounds[1:], self.n], strict=True))
        self.entry = {lo: s for s, (lo, _) in enumerate(self.stages)}
        self.queues = [queue.PriorityQueue() for _ in self.stages]
        self.order = itertools.count()
        self.threads = [threading.Thread(target=self._work, args=(s,), daemon=True)
                        for s in range(len(self.stages))]
        for t in self.threads:
            t.start()

    def submit(self, device: str, cut: int, act: torch.Tensor, y: torch.Tensor):
        """The gradient at the cut, the server's compute seconds and the loss of one batch."""
        req = Request(device, self.entry[cut], y, queue.Queue(1))
        self._put(req.entry, FORWARD, req, act)
        grad = req.done.get()
        if isinstance(grad, BaseException):
            raise grad
        return grad, req.compute_s, req.loss

    def close(self) -> None:
        """Stop and join every stage: a daemon thread still inside torch when the interpreter
        finalizes is killed by pthread_exit, which aborts the process ("terminate called
        without an active exception")."""
        for s in range(len(self.stages)):
            self._put(s, STOP, None, None)
        for t in self.threads:
            t.join()

    def _put(self, stage: int, kind: int, req: Request | None, t) -> None:
        self.queues[stage].put((kind, next(self.order), req, t))

    def _work(self, s: int) -> None:
        lo, hi = self.stages[s]
        last = hi == self.n
        cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        lr, memory = self.server.cfg["lr"], self.server.memory
        while True:
            kind, _, req, t = self.queues[s].get()
            if kind == STOP:
                return
            try:
                bs = self.server.copies[req.device]
                params = [q for b in bs[lo:hi] for q in b.parameters()]
                t0 = time.perf_counter()
                with memory.hooks():
                    if kind == FORWARD:
                        x = t.detach().requires_grad_(True)
                        out = forward(bs, x, lo, hi)
                        if last:  # the loss, then straight back through this stage
                            loss = nn.functional.cross_entropy(out, req.y)
                            grads = torch.autograd.grad(loss, [x, *params])
                            req.loss = float(loss.detach())
                            del loss, out
                        else:
                            cache[id(req)] = (x, out)
                            ahead = out.detach()
                    else:
                        x, out = cache.pop(id(req))
                        grads = torch.autograd.grad(out, [x, *params], grad_outputs=t)
                        del out
                    del x
                if kind == BACKWARD or last:
                    sgd(params, grads[1:], lr)
                req.compute_s += time.perf_counter() - t0
                if kind == FORWARD and not last:
                    self._put(s + 1, FORWARD, req, ahead)
                elif s == req.entry:
                    req.done.put(grads[0])
                else:
                    self._put(s - 1, BACKWARD, req, grads[0])
            except Exception as e:  # noqa: BLE001 - the device's thread reports it
                req.done.put(e)


class _Worker:
    """split-nonpipe: one forked process serving one device's rounds on its own socket. The
    device's weights it receives go into the device's copy (shared memory, so the parent
    averages them without a copy through a pipe); only a summary crosses the pipe."""

    def __init__(self, server: Server, d: dict, sock: socket.socket) -> None:
        self.name = d["name"]
        self.conn, child = multiprocessing.Pipe()
        self.rss0_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.grown_kb = 0  # the process's peak RSS beyond the parent's it started from
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                self.conn.close()
                code = self._serve(server, d, sock, child)
            finally:
                os._exit(code)  # never the parent's atexit, buffers or trace file
        child.close()

    def _serve(self, server: Server, d: dict, sock: socket.socket, conn) -> int:
        with contextlib.suppress(AttributeError, OSError):  # a libc without prctl: no PDEATHSIG
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the server
        if os.getppid() != server.pid:
            return 1  # the server died before the line above took effect
        join_cpu_slice(d.get("cpu_slice"))
        torch.set_num_threads(max(1, int(server.cfg.get("threads", 1)) // len(server.devices)))
        while conn.recv() == "round":
            results: dict[str, dict] = {}
            try:
                server._round(d, sock, results)
            except Exception as e:  # noqa: BLE001 - the parent raises it
                conn.send({"error": f"{type(e).__name__}: {e}"})
                return 1
            r = results[self.name]
            load_state(server.copies[self.name], r["weights"])
            conn.send({**r, "weights": None, "pid": os.getpid(), "cgroup": cpu_cgroup(),
                       "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss})
        return 0

    def result(self) -> dict:
        try:
            r = self.conn.recv()
        except EOFError:
            raise RuntimeError(f"the server's process for {self.name} died") from None
        if "error" in r:
            raise RuntimeError(f"the server's process for {self.name}: {r['error']}")
        self.grown_kb = max(self.grown_kb, r.pop("maxrss_kb") - self.rss0_kb)
        return r

    def stop(self) -> None:
        self.conn.send("stop")
        os.waitpid(self.pid, 0)


def connect(ip: str, port: int, timeout_s: float = 120.0) -> socket.socket:
    end = time.monotonic() + timeout_s
    while True:
        try:
            s = socket.create_connection((ip, port), timeout=600)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return s
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


class Server:
    """A server-side part per device; FedAvg after every round. Server modes:
    - split-nonpipe: each device's part in memory, its requests served by its own process
      (forked, the parts in shared memory), all devices at once: separate copies, as in the
      thesis, that the kernel shares the server's CPU among, not one interpreter's lock;
    - splitpipe-bf: the parts in memory, served by a pipeline of stages cut at the devices'
      distinct cuts, backward tasks first (Pipeline);
    - splitpipe-rw: one worker and one part in memory: a device's server-side weights are read
      from disk for its request and written back after it.
    """

    def __init__(self, cfg: dict) -> None:
        torch.set_num_threads(max(1, int(cfg.get("threads", 1))))
        self.cfg = cfg
        self.mode = cfg.get("server_mode", "split-nonpipe")
        self.model, self.shape = model_blocks(cfg)
        self.n = len(self.model)
        self.devices = cfg["devices"]  # [{name, cut, port}]
        self.lock = threading.Lock() if self.mode == "splitpipe-rw" else None
        if self.mode == "splitpipe-rw":
            self.spill = tempfile.mkdtemp(prefix="splitpipe-")
            self.shared = model_blocks(cfg)[0]
            self.copies = {}
            for d in self.devices:
                self._save(d["name"], block_state(self.model, int(d["cut"]), self.n))
        else:
            self.copies = {d["name"]: model_blocks(cfg)[0] for d in self.devices}
        if self.mode == "split-nonpipe":  # the per-device processes update them in place
            for bs in [self.model, *self.copies.values()]:  # (before ActiveMemory notes
                shared_memory(bs)  # where the parameters are)
        held = [self.shared] if self.mode == "splitpipe-rw" else list(self.copies.values())
        part = [sum(q.numel() * q.element_size() for b in self.model[int(d["cut"]):]
                    for q in b.parameters()) for d in self.devices]
        self.memory = ActiveMemory(
            [q for bs in held for b in bs for q in b.parameters()],
            max(part, default=0) if self.mode == "splitpipe-rw" else sum(part))
        cuts = [int(d["cut"]) for d in self.devices if int(d["cut"]) < self.n]
        self.pipe = Pipeline(self, cuts) if self.mode == "splitpipe-bf" and cuts else None
        self.xt, self.yt = images(cfg.get("test") or {"samples": 256, "seed": 99}, self.shape)
        self.trace = open(cfg["trace"], "a")  # noqa: SIM115
        self.pid = os.getpid()

    def _save(self, name: str, state: dict) -> None:
        torch.save(state, os.path.join(self.spill, f"{name}.pt"))

    def _load(self, name: str) -> dict:
        return torch.load(os.path.join(self.spill, f"{name}.pt"), weights_only=True)

    @contextlib.contextmanager
    def _part(self, name: str, cut: int):
        """The device's server-side blocks, held for one request (see the modes)."""
        if self.lock is None:
            yield self.copies[name]
            return
        with self.lock:
            load_state(self.shared, self._load(name))
            yield self.shared
            self._save(name, block_state(self.shared, cut, self.n))

    def _state(self, name: str, cut: int) -> dict:
        return self._load(name) if self.mode == "splitpipe-rw" else \
            block_state(self.copies[name], cut, self.n)

    def serve(self) -> None:
        listeners = {}
        for d in self.devices:
            ls = socket.socket()
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind(("0.0.0.0", int(d["port"])))
            ls.listen(1)
            listeners[d["name"]] = ls
        print("listening", flush=True)
        socks = {}
        for name, ls in listeners.items():
            s, _ = ls.accept()
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks[name] = s
            ls.close()
        workers = {d["name"]: _Worker(self, d, socks[d["name"]]) for d in self.devices} \
            if self.mode == "split-nonpipe" else {}
        for rnd in range(int(self.cfg["rounds"])):
            r0 = time.time()
            self.memory.reset_peak()
            results: dict[str, dict] = {}
            if workers:
                for w in workers.values():
                    w.conn.send("round")
                results = {name: w.result() for name, w in workers.items()}
            else:
                threads = [threading.Thread(target=self._round,
                                            args=(d, socks[d["name"]], results))
                           for d in self.devices]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            missing = [d["name"] for d in self.devices if "weights" not in results.get(
                d["name"], {})]
            if missing:
                raise RuntimeError(f"round {rnd}: no weights from {', '.join(missing)}")
            self._average(results)
            acc, loss = self._test()
            end = time.time()
            for d in self.devices:
                r = results[d["name"]]
                self.trace.write(json.dumps({
                    "role": "server", "device": d["name"], "round": rnd, "start": r0,
                    "end": end, "t_device_done": r["done"], "server_compute_s": r["compute_s"],
                    "served_by_pid": r.get("pid", os.getpid()),
                    "served_in_cgroup": r.get("cgroup") or cpu_cgroup(),
                    "accuracy": acc, "loss": loss, "train_loss": r["loss"],
                    "peak_rss_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                    + sum(w.grown_kb for w in workers.values())) / 1000,
                    "active_peak_mb": self.memory.peak / 1e6,
                }) + "\n")
            self.trace.flush()
        for w in workers.values():
            w.stop()
        for s in socks.values():
            send(s, {"done": torch.tensor(1)})
            s.close()
        if self.pipe is not None:
            self.pipe.close()
        if self.mode == "splitpipe-rw":
            shutil.rmtree(self.spill, ignore_errors=True)

    def _round(self, d: dict, sock: socket.socket, results: dict) -> None:
        cut = int(d["cut"])
        send(sock, {"weights": block_state(self.model, 0, cut)})
        compute, losses = 0.0, []
        while True:
            msg, _ = recv(sock)
            if "weights" in msg:
                results[d["name"]] = {"weights": msg["weights"], "samples": int(msg["samples"]),
                                      "compute_s": compute, "done": time.time(),
                                      "loss": sum(losses) / len(losses) if losses else None}
                return
            if self.pipe is not None:
                grad, spent, loss = self.pipe.submit(d["name"], cut, msg["act"], msg["y"])
                compute += spent
                losses.append(loss)
                send(sock, {"grad": grad})
                continue
            t0 = time.perf_counter()
            act = msg["act"].requires_grad_(True)
            with self._part(d["name"], cut) as bs, self.memory.hooks():
                params = [q for b in bs[cut:] for q in b.parameters()]
                loss = nn.functional.cross_entropy(forward(bs, act, cut, self.n), msg["y"])
                grads = torch.autograd.grad(loss, [act, *params])
                sgd(params, grads[1:], self.cfg["lr"])
            compute += time.perf_counter() - t0
            losses.append(float(loss.detach()))
            del loss
            send(sock, {"grad": grads[0]})

    def _average(self, results: dict) -> None:
        """FedAvg per block over its holders: devices that train it, server copies otherwise,
        weighted by each device's samples."""
        total = {}
        for d in self.devices:
            r, cut = results[d["name"]], int(d["cut"])
            state = {**r["weights"], **self._state(d["name"], cut)} if r["weights"] else \
                block_state(self.copies[d["name"]], 0, self.n)  # a worker put them there
            for key, t in state.items():
                acc = total.setdefault(key, [torch.zeros_like(t, dtype=torch.float64), 0])
                acc[0] += t.double() * r["samples"]
                acc[1] += r["samples"]
        avg = {}
        for key, (s, w) in total.items():
            ref = dict(self.model[int(key.partition(".")[0])].state_dict())[key.partition(".")[2]]
            avg[key] = (s / w).to(ref.dtype)
        load_state(self.model, avg)
        for d in self.devices:
            part = block_state(self.model, int(d["cut"]), self.n)
            if self.mode == "splitpipe-rw":
                self._save(d["name"], part)
            else:
                load_state(self.copies[d["name"]], part)

    def _test(self) -> tuple[float, float]:
        with torch.no_grad():
            for b in self.model:
                b.eval()
            out = forward(self.model, self.xt, 0, self.n)
            for b in self.model:
                b.train()
            loss = float(nn.functional.cross_entropy(out, self.yt))
            return float((out.argmax(1) == self.yt).float().mean()) * 100, loss


def main() -> None:
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    if cfg["role"] == "profile":
        join_cpu_slice(cfg.get("cpu_slice"))
        torch.set_num_threads(max(1, int(cfg.get("threads", 1))))
        said, work = profile(cfg)
        print(json.dumps(said), flush=True)
        if cfg.get("hold"):
            hold(work)
    elif cfg["role"] == "device":
        device(cfg)
    else:
        Server(cfg).serve()


if __name__ == "__main__":
    main()
