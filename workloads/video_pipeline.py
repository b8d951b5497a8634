"""Pedestrian re-identification on a node, one process per role (config file as the argument):

- profile: seconds per frame of the detection path (JPEG decode, resize, SSDLite forward) and
  per crop of the re-ID path (decode, OSNet-like forward) as this node delivers them over
  time (under a CPU quota only a long run's rate counts), and the encoded size of frames;
- camera: renders a seeded synthetic scene (pedestrians from the count trace walk across a
  textured background), encodes each frame as JPEG and sends it at the camera's rate;
- edge: every model one device hosts, in one process: per stream mapped here a detector that
  keeps only the newest frame received (a late detector skips frames, as live video
  analytics does), detects on it, cuts the pedestrians' crops and sends them to the stream's
  re-ID instance (at most `window` frames wait for re-ID at once); per re-ID instance placed
  here a server that batches crops from every stream it serves. One worker takes turns.
  With `sessions: 2` the cameras connect twice: first for a pilot, whose records the edge
  prints on stdout once every frame of it is through (a line {"pilot": [...]}), then for the
  measured run, which goes to the trace. The models stay loaded in between.

Messages: 4-byte length, a JSON header, then header["n"] payload bytes. Every frame becomes
one trace line at its detector (capture, receive, detection and re-ID times), every re-ID
batch one line too.
Standard library + numpy + Pillow + torch: boards and images run this file.
"""

from __future__ import annotations

import bisect
import io
import json
import os
import socket
import struct
import sys
import threading
import time

import numpy as np
from hold import hold, ready
from PIL import Image

torch = None  # imported on first use: a camera never loads it (seconds at a small CPU quota)


def _torch():
    global torch
    if torch is None:
        import torch as loaded

        torch = loaded
    return torch

CROP_SIZE = (64, 128)  # width, height of a crop as the detector cuts it
REID_INPUT = (256, 128)  # height, width the re-ID model takes
BATCH_MAX = 4  # crops a re-ID instance takes at once (more when one frame brings more)


# ---- messages ------------------------------------------------------------------------------
def send(sock: socket.socket, header: dict, payload: bytes = b"") -> None:
    head = json.dumps({**header, "n": len(payload)}).encode()
    sock.sendall(struct.pack("!I", len(head)) + head + payload)


def recv(sock: socket.socket) -> tuple[dict, bytes] | None:
    raw = _exact(sock, 4)
    if raw is None:
        return None
    head = json.loads(_exact(sock, struct.unpack("!I", raw)[0]))
    return head, (_exact(sock, head["n"]) or b"") if head["n"] else b""


def _exact(sock: socket.socket, n: int) -> bytes | None:
    parts, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def connect(ip: str, port: int, timeout_s: float = 30.0) -> socket.socket:
    deadline = time.time() + timeout_s
    while True:
        try:
            s = socket.create_connection((ip, port), timeout=5)
            s.settimeout(None)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return s
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def listen(port: int) -> socket.socket:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(64)
    return srv


# ---- the scene -----------------------------------------------------------------------------
class Scene:
    """A camera's view: a fixed textured background and `count` walkers at time t."""

    def __init__(self, width: int, height: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:height, 0:width]
        base = (60 + 80 * xx / width + 40 * yy / height)[..., None] * rng.uniform(0.6, 1.0, 3)
        self.background = np.clip(base + rng.normal(0, 12, (height, width, 3)), 0, 255)
        self.w, self.h = width, height
        self.walkers = [(rng.uniform(0, 1), rng.uniform(0.3, 0.7), rng.uniform(0.03, 0.1),
                         rng.uniform(0, 255, 3)) for _ in range(64)]
        # sensor noise, precomputed (rendering stays cheap on a small CPU quota): every frame
        # still encodes anew, as the walkers move and the noise pattern cycles
        self.noise = [rng.normal(0, 4, (height, width, 3)) for _ in range(4)]
        self.frames = 0

    def boxes(self, t: float, count: int) -> list[list[int]]:
        bw, bh = max(self.w // 16, 8), max(self.h // 4, 16)
        out = []
        for k in range(count):
            x0, y0, speed, _ = self.walkers[k % len(self.walkers)]
            x = ((x0 + speed * t) % 1.0) * (self.w - bw)
            out.append([int(x), int(y0 * (self.h - bh)), bw, bh])
        return out

    def frame(self, t: float, count: int) -> tuple[bytes, list[list[int]], int]:
        img = self.background.copy()
        boxes = self.boxes(t, count)
        for k, (x, y, w, h) in enumerate(boxes):
            img[y:y + h, x:x + w] = self.walkers[k % len(self.walkers)][3]
        img += self.noise[self.frames % len(self.noise)]
        self.frames += 1
        return np.clip(img, 0, 255).astype(np.uint8), boxes, count

    @staticmethod
    def encode(pixels: np.ndarray, quality: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
        return buf.getvalue()


def count_at(points: list[list[float]], t: float) -> int:
    i = bisect.bisect_right([p[0] for p in points], t) - 1
    return int(round(points[max(i, 0)][1]))


# ---- the two models' paths -----------------------------------------------------------------
class Detector:
    def __init__(self, side: int) -> None:
        from video_models import build

        _torch()
        self.model, self.side = build("ssdlite_mobilenet"), side

    def __call__(self, jpeg: bytes) -> Image.Image:
        img = Image.open(io.BytesIO(jpeg)).convert("RGB")
        x = torch.from_numpy(np.asarray(img.resize((self.side, self.side)), dtype=np.float32))
        with torch.no_grad():
            self.model((x.permute(2, 0, 1)[None] - 128.0) / 64.0)
        return img


def crops(img: Image.Image, boxes: list[list[int]], n: int, quality: int,
          size_bytes: int) -> list[bytes]:
    """n JPEG crops of the frame's pedestrians, each padded to the file's size per crop."""
    out = []
    for k in range(n):
        x, y, w, h = boxes[k % len(boxes)] if boxes else (0, 0, 32, 64)
        buf = io.BytesIO()
        img.crop((x, y, x + w, y + h)).resize(CROP_SIZE).save(buf, format="JPEG",
                                                              quality=quality)
        data = buf.getvalue()
        out.append(data + b"\0" * max(0, size_bytes - len(data)))
    return out


class Reid:
    def __init__(self) -> None:
        from video_models import build

        _torch()
        self.model = build("osnet_like")

    def __call__(self, jpegs: list[bytes]):
        xs = [torch.from_numpy(np.asarray(Image.open(io.BytesIO(j)).convert("RGB").resize(
            (REID_INPUT[1], REID_INPUT[0])), dtype=np.float32)).permute(2, 0, 1) for j in jpegs]
        with torch.no_grad():
            return self.model((torch.stack(xs) - 128.0) / 64.0)


# ---- roles ---------------------------------------------------------------------------------
def _rate(fn, budget_s: float) -> float:
    """Seconds per call over at least `budget_s` of wall time (after one warm-up call)."""
    fn()
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < budget_s:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n


def profile(cfg: dict) -> tuple[dict, object]:
    """Seconds per detection, crop and re-ID call at this node's CPU quota, the encoded frame
    sizes, and a detection to keep the node busy with afterwards."""
    budget = float(cfg.get("budget_s", 2.0))
    frames = {}
    for w, h, q in cfg["frames"]:
        scene = Scene(w, h, 0)
        sizes = [len(Scene.encode(scene.frame(t, 3)[0], q)) for t in (0.0, 0.5, 1.0)]
        frames[f"{w}x{h}q{q}"] = sum(sizes) / len(sizes)
    w, h, q = cfg["frames"][0]
    scene = Scene(w, h, 0)
    pixels, boxes, _ = scene.frame(0.0, 3)
    jpeg = Scene.encode(pixels, q)
    det = Detector(int(cfg["input"]))
    img = det(jpeg)
    batch = crops(img, boxes, BATCH_MAX, 80, 0)
    reid = Reid()
    reid(batch[:1])
    ready(bool(cfg.get("together")))
    said = {"detect_s": _rate(lambda: det(jpeg), budget),
            "crop_s": _rate(lambda: crops(img, boxes, 1, 80, 20_000), budget / 4),
            # a call of 1 crop and of BATCH_MAX: a fixed cost per call plus one per crop
            "reid1_s": _rate(lambda: reid(batch[:1]), budget / 2),
            "reid_batch_s": _rate(lambda: reid(batch), budget), "batch": BATCH_MAX,
            "frame_bytes": frames}
    return said, lambda: det(jpeg)


def profile_camera(cfg: dict) -> dict:
    """Seconds to render and encode one frame of each size on this camera node, at its CPU
    quota: what a camera can produce per second, whatever the network takes."""
    budget = float(cfg.get("budget_s", 1.0))
    out = {}
    ready(bool(cfg.get("together")))
    for w, h, q in cfg["frames"]:
        scene, ticks = Scene(w, h, 0), iter(range(1_000_000))
        out[f"{w}x{h}q{q}"] = _rate(
            lambda s=scene, k=ticks, q=q: Scene.encode(s.frame(next(k) * 0.2, 3)[0], q), budget)
    return {"capture_s": out}


def camera(cfg: dict) -> None:
    """Capture and send run side by side, as on a real camera: one thread renders and encodes
    a frame at each tick of the frame rate (a tick that finds it still busy is missed: a live
    camera does not catch up), the sender sends the newest encoded frame as soon as the link
    took the previous one (a frame the link had no time for is dropped, never queued)."""
    w, h = cfg["size"]
    scene, fps, q = Scene(w, h, int(cfg["seed"])), float(cfg["fps"]), int(cfg["quality"])
    sock = connect(cfg["dst_ip"], int(cfg["port"]), timeout_s=60)
    # every camera starts at the same moment, once every detector is ready (the runner's
    # start time), so streams compete from their first frame as in steady state
    time.sleep(max(0.0, float(cfg.get("start_at", 0)) - time.time()))
    if time.time() > float(cfg.get("start_at", 0)) + 1.0:
        print(f"started {time.time() - float(cfg['start_at']):.1f} s late", flush=True)
    t_start, duration = time.time(), float(cfg["duration_s"])
    newest: list = [None]  # the encoded frame waiting for the link, or None
    ended = [False]
    ready = threading.Condition()
    captured = [0]

    def capture() -> None:
        frame = 0
        while frame / fps < duration:
            time.sleep(max(0.0, t_start + frame / fps - time.time()))
            t = time.time() - t_start
            pixels, boxes, count = scene.frame(t, count_at(cfg["pedestrians"], t))
            data = Scene.encode(pixels, q)
            with ready:
                newest[0] = {"frame": frame, "t_capture": time.time(), "boxes": boxes,
                             "count": count, "data": data}
                ready.notify()
            captured[0] += 1
            frame = max(frame + 1, int((time.time() - t_start) * fps) + 1)
        with ready:
            ended[0] = True
            ready.notify()

    threading.Thread(target=capture, daemon=True).start()
    records = []
    while True:
        with ready:
            while newest[0] is None and not ended[0]:
                ready.wait()
            item, newest[0] = newest[0], None
        if item is None:
            break
        data = item.pop("data")
        send(sock, item, data)
        records.append({"frame": item["frame"], "t_capture": item["t_capture"],
                        "bytes": len(data)})
    send(sock, {"end": True})
    sock.close()
    _write(cfg["trace"], records)
    print(f"captured {captured[0]} frames, sent {len(records)}", flush=True)


class StreamHost:
    """A stream's detector on this device: the newest frame the camera sent (older ones not
    yet taken are skipped, as live analytics does), its crops' connection to its re-ID
    instance, and a record per processed frame."""

    def __init__(self, cfg: dict, work: threading.Condition) -> None:
        self.cfg, self.work, self.name = cfg, work, cfg["stream"]
        self.detector = Detector(int(cfg["input"]))  # one loaded model per stream (eq. 5.4)
        self.srv = listen(int(cfg["port"]))
        self.latest, self.ended, self.skipped = None, False, 0
        self.outstanding, self.window = 0, int(cfg.get("window", 2))
        self.every, self.due = max(1, int(cfg.get("every", 1))), 0.0
        self.records: dict[int, dict] = {}
        self.reid: socket.socket | None = None
        self.closed = False
        self.sessions, self.sessions_ended, self.paused = int(cfg.get("sessions", 1)), 0, 0

    def start(self) -> None:
        self.reid = connect(self.cfg["reid_ip"], int(self.cfg["reid_port"]), timeout_s=120)
        send(self.reid, {"hello": self.name})
        threading.Thread(target=self._receive, daemon=True).start()
        threading.Thread(target=self._replies, daemon=True).start()

    def _receive(self) -> None:
        for _ in range(self.sessions):  # one camera connection per session
            conn, _ = self.srv.accept()
            while (msg := recv(conn)) is not None and not msg[0].get("end"):
                msg[0]["t_recv"] = time.time()
                with self.work:
                    if self.latest is not None:
                        self.skipped += 1
                    self.latest = msg
                    self.work.notify()
            conn.close()
            with self.work:
                self.sessions_ended += 1
                self.work.notify()
        with self.work:
            self.ended = True
            self.work.notify()

    def _replies(self) -> None:
        while (msg := recv(self.reid)) is not None:
            with self.work:
                self.records[msg[0]["frame"]]["t_reid_done"] = time.time()
                self.outstanding -= 1
                self.work.notify()

    def ready(self) -> bool:
        """A frame waits and its crops would have room in the re-ID window (under the lock)."""
        return self.latest is not None and self.outstanding < self.window

    def step(self) -> None:
        with self.work:
            (head, jpeg), self.latest = self.latest, None
            skipped = self.skipped
        t0 = time.time()
        img = self.detector(jpeg)
        t1 = time.time()
        self.due += head["count"] / self.every
        n = int(self.due)
        self.due -= n
        with self.work:
            self.records[head["frame"]] = {
                "type": "frame", "stream": self.name, "frame": head["frame"],
                # the camera's stamp, on the camera's clock: not a `t_` field of this node
                "captured_at": head["t_capture"], "t_recv": head["t_recv"], "t_detect_start": t0,
                "t_detect_end": t1, "pedestrians": head["count"], "crops": n,
                "frame_bytes": len(jpeg), "skipped_before": skipped}
            if n:
                self.outstanding += 1
        if n:
            payload = crops(img, head["boxes"], n, 80, int(self.cfg["crop_bytes"]))
            send(self.reid, {"stream": self.name, "frame": head["frame"],
                             "sizes": [len(c) for c in payload]}, b"".join(payload))

    def session_drained(self, k: int) -> bool:
        """Session k's camera ended and every frame of it is through (under the lock); tells
        the re-ID instance once, so that it knows when no more of the session's crops come."""
        if self.sessions_ended <= k or self.latest is not None or self.outstanding:
            return False
        if self.paused <= k:
            send(self.reid, {"pause": k})
            self.paused = k + 1
        return True

    def next_session(self) -> list[dict]:
        """The ended session's records, handed over and forgotten (frame numbers restart)."""
        rows = [self.records[k] for k in sorted(self.records)]
        self.records, self.skipped, self.due = {}, 0, 0.0
        return rows

    def drained(self) -> bool:
        """The camera ended and every frame is through; tells the re-ID instance once."""
        if not self.ended or self.latest is not None:
            return False
        if not self.closed:
            send(self.reid, {"end": True})
            self.closed = True
        return self.outstanding == 0


class ReidHost:
    """A re-ID instance on this device, serving every stream that connects: crops from all of
    them are batched (up to BATCH_MAX, or one frame's crops if more)."""

    def __init__(self, cfg: dict, work: threading.Condition) -> None:
        self.id, self.work = int(cfg["id"]), work
        self.model, self.srv = Reid(), listen(int(cfg["port"]))
        self.expected, self.closed, self.pauses = int(cfg["clients"]), 0, 0
        self.inbox: list = []
        self.batches: list[dict] = []

    def start(self) -> None:
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        for _ in range(self.expected):
            conn, _ = self.srv.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        while (msg := recv(conn)) is not None and not msg[0].get("end"):
            if "pause" in msg[0]:
                with self.work:
                    self.pauses += 1
                    self.work.notify()
            elif "hello" not in msg[0]:
                with self.work:
                    self.inbox.append((conn, *msg))
                    self.work.notify()
        with self.work:
            self.closed += 1
            self.work.notify()

    def ready(self) -> bool:
        return bool(self.inbox)

    def step(self) -> None:
        with self.work:
            work, n = [], 0
            while self.inbox and (not work or n + len(self.inbox[0][1]["sizes"]) <= BATCH_MAX):
                work.append(self.inbox.pop(0))
                n += len(work[-1][1]["sizes"])
        jpegs = []
        for _, head, payload in work:
            at = 0
            for size in head["sizes"]:
                jpegs.append(payload[at:at + size])
                at += size
        t0 = time.time()
        self.model(jpegs)
        t1 = time.time()
        for conn, head, _ in work:
            send(conn, {"frame": head["frame"], "t_done": t1})
        self.batches.append({"type": "batch", "instance": self.id, "t_start": t0, "t_end": t1,
                             "crops": len(jpegs),
                             "streams": sorted({h["stream"] for _, h, _ in work})})

    def session_drained(self, k: int) -> bool:
        """Every client said session k is over and its crops are answered."""
        return self.pauses >= self.expected * (k + 1) and not self.inbox

    def next_session(self) -> list[dict]:
        rows, self.batches = self.batches, []
        return rows

    def drained(self) -> bool:
        return self.closed >= self.expected and not self.inbox


def edge(cfg: dict) -> None:
    """Every model this device hosts, in one process with one worker that takes turns: a frame
    of each stream whose detector has one, then a batch of each re-ID instance with crops
    waiting. (Several processes splitting one CPU quota lose about a quarter of it to their
    contention, measured: one worker keeps the device's work what its profile says.)"""
    _torch().set_num_threads(max(1, int(cfg.get("threads", 1))))
    work = threading.Condition()
    instances = [ReidHost(c, work) for c in cfg["instances"]]
    for r in instances:
        r.start()
    streams = [StreamHost({**c, "sessions": cfg.get("sessions", 1)}, work)
               for c in cfg["streams"]]
    for st in streams:
        st.start()
    print("ready", flush=True)  # models loaded, listening, connected to the re-ID instances
    hosts: list = [*streams, *instances]
    deadline, reported = None, 0
    pilots = int(cfg.get("sessions", 1)) - 1
    while True:
        did = False
        for h in hosts:
            with work:
                go = h.ready()
            if go:
                h.step()
                did = True
        with work:
            if not did and reported < pilots and all(h.session_drained(reported) for h in hosts):
                print(json.dumps({"pilot": [r for h in hosts for r in h.next_session()]}),
                      flush=True)
                reported += 1
                continue
            if not did:
                if all(st.drained() for st in streams) and all(r.drained() for r in instances):
                    break
                if streams and all(st.ended for st in streams) and deadline is None:
                    deadline = time.time() + float(cfg.get("drain_s", 30))
                if deadline is not None and time.time() > deadline:
                    break  # replies that never came: the records say so
                work.wait(0.05)
    rows = [r for st in streams for r in sorted(st.records.values(), key=lambda r: r["frame"])]
    _write(cfg["trace"], rows + [b for r in instances for b in r.batches])


def _write(path: str, rows: list[dict]) -> None:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def main() -> None:
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    role = cfg["role"]
    if role == "profile":
        _torch().set_num_threads(max(1, int(cfg.get("threads", 1))))
        said, detect = profile(cfg)
        print(json.dumps(said), flush=True)
        if cfg.get("hold"):
            hold(detect)
    elif role == "profile_camera":
        print(json.dumps(profile_camera(cfg)), flush=True)
    elif role == "camera":
        camera(cfg)
    else:
        edge(cfg)
        # leave without the interpreter's teardown: with daemon threads still blocked in
        # sockets, torch's shutdown can abort ("terminate called without an active
        # exception", exit -6) after the trace is written
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
