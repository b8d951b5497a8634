"""Pedestrian re-identification on a node, one process per role (config file as the argument):

- profile: seconds per frame of the detection path (JPEG decode, resize, SSDLite forward) and
  per crop of the re-ID path (decode, OSNet-like forward) as this node delivers them over
  time (under a CPU quota only a long run's rate counts), and the encoded size of frames;
- camera: renders a seeded synthetic scene (pedestrians from the count trace walk across a
  textured background), encodes each frame as JPEG and sends it at the camera's rate;
- detect: keeps only the newest frame it has received (a late detector skips frames, as live
  video analytics does), detects on it, cuts the pedestrians' crops and sends them to its
  re-ID instance; at most `window` frames wait for re-ID at once;
- reid: one instance serves every stream that connects; crops from all of them are batched.

Messages: 4-byte length, a JSON header, then header["n"] payload bytes. Every frame becomes
one trace line at its detector (capture, receive, detection and re-ID times).
Standard library + numpy + Pillow + torch: boards and images run this file.
"""

from __future__ import annotations

import bisect
import io
import json
import queue
import socket
import struct
import sys
import threading
import time

import numpy as np
import torch
from PIL import Image
from video_models import build

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
        self.model = build("osnet_like")

    def __call__(self, jpegs: list[bytes]) -> torch.Tensor:
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


def profile(cfg: dict) -> dict:
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
    return {"detect_s": _rate(lambda: det(jpeg), budget),
            "crop_s": _rate(lambda: crops(img, boxes, 1, 80, 20_000), budget / 4),
            # per crop in a full batch: the rate an instance reaches when re-ID is the
            # bottleneck (single crops cost ~25% more each)
            "reid_s": _rate(lambda: reid(batch), budget) / BATCH_MAX, "frame_bytes": frames}


def camera(cfg: dict) -> None:
    w, h = cfg["size"]
    scene, fps, q = Scene(w, h, int(cfg["seed"])), float(cfg["fps"]), int(cfg["quality"])
    sock = connect(cfg["dst_ip"], int(cfg["port"]), timeout_s=60)
    # every camera starts at the same moment, once every detector is ready (the runner's
    # start time), so streams compete from their first frame as in steady state
    time.sleep(max(0.0, float(cfg.get("start_at", 0)) - time.time()))
    records, t_start = [], time.time()
    frame = 0
    while True:
        due = t_start + frame / fps
        if due - t_start >= float(cfg["duration_s"]):
            break
        time.sleep(max(0.0, due - time.time()))
        t = time.time() - t_start
        pixels, boxes, count = scene.frame(t, count_at(cfg["pedestrians"], t))
        data = Scene.encode(pixels, q)
        t_capture = time.time()
        send(sock, {"frame": frame, "t_capture": t_capture, "boxes": boxes, "count": count},
             data)
        records.append({"frame": frame, "t_capture": t_capture, "bytes": len(data)})
        frame += 1
    send(sock, {"end": True})
    sock.close()
    _write(cfg["trace"], records)


class Latest:
    """The newest frame received; older ones not yet taken are skipped (and counted)."""

    def __init__(self) -> None:
        self.cond, self.item, self.ended, self.skipped = threading.Condition(), None, False, 0

    def put(self, item) -> None:
        with self.cond:
            if self.item is not None:
                self.skipped += 1
            self.item = item
            self.cond.notify()

    def end(self) -> None:
        with self.cond:
            self.ended = True
            self.cond.notify()

    def take(self):
        with self.cond:
            while self.item is None and not self.ended:
                self.cond.wait()
            item, self.item = self.item, None
            return item


def detect(cfg: dict) -> None:
    torch.set_num_threads(max(1, int(cfg.get("threads", 1))))
    det = Detector(int(cfg["input"]))
    srv = listen(int(cfg["port"]))
    reid = connect(cfg["reid_ip"], int(cfg["reid_port"]), timeout_s=120)
    send(reid, {"hello": cfg["stream"]})
    latest, window = Latest(), threading.Semaphore(int(cfg.get("window", 2)))
    records: dict[int, dict] = {}
    lock = threading.Lock()

    def receive() -> None:
        conn, _ = srv.accept()
        while (msg := recv(conn)) is not None and not msg[0].get("end"):
            msg[0]["t_recv"] = time.time()
            latest.put(msg)
        latest.end()

    def replies() -> None:
        while (msg := recv(reid)) is not None:
            with lock:
                records[msg[0]["frame"]]["t_reid_done"] = time.time()
            window.release()

    threading.Thread(target=receive, daemon=True).start()
    threading.Thread(target=replies, daemon=True).start()
    print("ready", flush=True)  # model loaded, listening, connected to its re-ID instance
    every, due = max(1, int(cfg.get("every", 1))), 0.0
    while (msg := latest.take()) is not None:
        head, jpeg = msg
        t0 = time.time()
        img = det(jpeg)
        t1 = time.time()
        due += head["count"] / every
        n = int(due)
        due -= n
        rec = {"stream": cfg["stream"], "frame": head["frame"], "t_capture": head["t_capture"],
               "t_recv": head["t_recv"], "t_detect_start": t0, "t_detect_end": t1,
               "pedestrians": head["count"], "crops": n, "frame_bytes": len(jpeg),
               "skipped_before": latest.skipped}
        with lock:
            records[head["frame"]] = rec
        if n:
            window.acquire()
            payload = crops(img, head["boxes"], n, 80, int(cfg["crop_bytes"]))
            send(reid, {"stream": cfg["stream"], "frame": head["frame"],
                        "sizes": [len(c) for c in payload]}, b"".join(payload))
    send(reid, {"end": True})
    deadline = time.time() + float(cfg.get("drain_s", 20))
    while time.time() < deadline:
        with lock:
            if all("t_reid_done" in r for r in records.values() if r["crops"]):
                break
        time.sleep(0.05)
    with lock:
        _write(cfg["trace"], sorted(records.values(), key=lambda r: r["frame"]))


def reid_instance(cfg: dict) -> None:
    torch.set_num_threads(max(1, int(cfg.get("threads", 1))))
    model, srv = Reid(), listen(int(cfg["port"]))
    inbox: queue.Queue = queue.Queue()
    expected, batch_max = int(cfg["clients"]), int(cfg.get("batch_max", BATCH_MAX))

    def serve(conn: socket.socket) -> None:
        while (msg := recv(conn)) is not None and not msg[0].get("end"):
            if "hello" not in msg[0]:
                inbox.put((conn, *msg))
        inbox.put(None)

    def accept() -> None:
        for _ in range(expected):
            conn, _ = srv.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    closed, batches = 0, []
    while closed < expected:
        item = inbox.get()
        got = [item]
        while sum(len(g[1]["sizes"]) for g in got if g) < batch_max:
            try:
                got.append(inbox.get_nowait())
            except queue.Empty:
                break
        closed += sum(1 for g in got if g is None)
        work = [g for g in got if g is not None]
        if not work:
            continue
        jpegs = []
        for _, head, payload in work:
            at = 0
            for size in head["sizes"]:
                jpegs.append(payload[at:at + size])
                at += size
        t0 = time.time()
        model(jpegs)
        t1 = time.time()
        for conn, head, _ in work:
            send(conn, {"frame": head["frame"], "t_done": t1})
        batches.append({"t_start": t0, "t_end": t1, "crops": len(jpegs),
                        "streams": sorted({h["stream"] for _, h, _ in work})})
    _write(cfg["trace"], batches)


def _write(path: str, rows: list[dict]) -> None:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def main() -> None:
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    role = cfg["role"]
    if role == "profile":
        torch.set_num_threads(max(1, int(cfg.get("threads", 1))))
        print(json.dumps(profile(cfg)))
    elif role == "camera":
        camera(cfg)
    elif role == "detect":
        detect(cfg)
    else:
        reid_instance(cfg)


if __name__ == "__main__":
    main()
