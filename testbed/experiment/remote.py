"""Task processes on the hosts of a topology built through a Ray cluster (the host may be
another machine, so the driver can neither enter its namespaces nor read its files).

On each such host, one Ray actor for the run (`HostProcesses`, pinned to the host's Ray node)
starts the processes with the same `Processes` code a local run uses, in a scratch directory
of its own, and reports what they print. On the driver, each one is a `RemoteProcess`: the
part of subprocess.Popen the kinds use (poll, wait, kill, communicate, and real pipes for
stdin and stdout, so selectors and line iteration work), fed by one thread per host
(`HostLink`). Logs stream into the run directory as they grow; traces come back at the end.
If the driver dies, Ray ends the actor and with it every process it started.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import selectors
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import ray

from testbed.experiment.processes import Processes
from testbed.net.ledger import Ledger
from testbed.raycluster import LABEL, RUN_SCRATCH, alive, connect, on, sweep_scratch

FOLLOW_S = 0.2  # how long one report from a host waits for news
PIPE_BYTES = 1 << 20  # room in a RemoteProcess's stdout before the host's reports wait


@ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0, max_concurrency=4)
class HostProcesses:
    """One run's processes on this host. Calls come from the driver's HostLink."""

    def __init__(self, ledger: Ledger, program: str, unprivileged: bool) -> None:
        sweep_scratch(RUN_SCRATCH)  # left by runs whose driver was killed
        self.dir = Path(tempfile.mkdtemp(prefix=f"{RUN_SCRATCH}{os.getpid()}-"))
        here = {k: v for k, v in ledger.extra.items() if k != "cluster"}  # act on this host
        ledger = dataclasses.replace(ledger, extra=here)
        self.processes = Processes(ledger, self.dir, program, unprivileged)
        self.procs: dict[str, subprocess.Popen] = {}
        self.lines: dict[str, list[str]] = {}  # label -> stdout lines not yet reported
        self.eof: set[str] = set()  # labels whose stdout ended (all reported lines read)
        self.logged: dict[str, int] = {}  # label -> log bytes reported
        self.ended: set[str] = set()  # labels whose end was reported
        self.traces: list[str] = []  # paths relative to the run directory
        self.news = threading.Condition()

    def where(self) -> tuple[str, int]:
        return ray.get_runtime_context().get_node_labels().get(LABEL, ""), os.getpid()

    def spawn(self, node: str, label: str, config: dict, talk: bool) -> int:
        if "trace" in config:  # relative to the run directory: here, under this one
            self.traces.append(config["trace"])
            path = self.dir / config["trace"]
            path.parent.mkdir(parents=True, exist_ok=True)
            config = {**config, "trace": str(path)}
        proc = self.processes.spawn(node, label, config, talk)
        with self.news:
            self.procs[label] = proc
            self.lines[label] = []
        if talk:
            threading.Thread(target=self._read, args=(label, proc), daemon=True).start()
        return proc.pid

    def _read(self, label: str, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            with self.news:
                self.lines[label].append(line)
                self.news.notify_all()
        with self.news:
            self.eof.add(label)
            self.news.notify_all()

    def write(self, label: str, text: str) -> bool:
        """Whether the process took it (False: it closed its stdin or ended)."""
        try:
            self.procs[label].stdin.write(text)
            self.procs[label].stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            return False
        return True

    def close_stdin(self, label: str) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.procs[label].stdin.close()

    def kill(self, label: str) -> None:
        if self.procs[label].poll() is None:
            self.procs[label].kill()

    def follow(self, wait_s: float) -> dict[str, tuple[list[str], bytes, bool, int | None]]:
        """What changed since the last call, per label: new stdout lines, new log bytes,
        whether stdout ended, and the exit code once it ended (waits up to `wait_s` for
        something to report)."""
        deadline = time.monotonic() + wait_s
        with self.news:
            while True:
                out = self._changes()
                left = deadline - time.monotonic()
                if out or left <= 0:
                    return out
                self.news.wait(min(left, 0.05))  # ends of silent processes are polled

    def _changes(self) -> dict[str, tuple[list[str], bytes, bool, int | None]]:
        out = {}
        for label, proc in self.procs.items():
            if label in self.ended:
                continue
            code = proc.poll()
            talk = proc.stdout is not None
            if code is not None and talk and label not in self.eof:
                code = None  # report the end after the last line
            lines, self.lines[label] = self.lines[label], []
            log = self._log(label)
            if code is not None:
                self.ended.add(label)
            if lines or log or code is not None:
                out[label] = (lines, log, label in self.eof, code)
        return out

    def _log(self, label: str) -> bytes:
        with contextlib.suppress(OSError), open(self.dir / "logs" / f"{label}.log", "rb") as f:
            f.seek(self.logged.get(label, 0))
            new = f.read()
            self.logged[label] = self.logged.get(label, 0) + len(new)
            return new
        return b""

    def usage(self, nodes: list[str]) -> dict[str, tuple[float, int] | None]:
        return self.processes.usage({None: nodes})  # here, every node is this host's

    def finish(self) -> dict[str, bytes]:
        """Stop what still runs, bring back traces from containers, and hand over every trace
        (path relative to the run directory -> content); the scratch directory goes."""
        Processes.stop(list(self.procs.values()))
        self.processes.finish()
        out = {}
        for rel in self.traces:
            with contextlib.suppress(OSError):
                out[rel] = (self.dir / rel).read_bytes()
        shutil.rmtree(self.dir, ignore_errors=True)
        return out


class _Stdin:
    """A remote process's stdin: what is written goes to it on flush (as Popen's text pipe)."""

    def __init__(self, link: HostLink, label: str) -> None:
        self.link, self.label, self.buffer, self.closed = link, label, [], False

    def write(self, text: str) -> int:
        if self.closed:
            raise ValueError("write to closed file")
        self.buffer.append(text)
        return len(text)

    def flush(self) -> None:
        text, self.buffer = "".join(self.buffer), []
        if text and not ray.get(self.link.actor.write.remote(self.label, text)):
            raise BrokenPipeError(f"{self.label} no longer reads its input")

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(BrokenPipeError):
                self.flush()
            self.closed = True
            ray.get(self.link.actor.close_stdin.remote(self.label))


class RemoteProcess:
    """A process started by a host's HostProcesses, seen as the subprocess.Popen it is there."""

    def __init__(self, link: HostLink, label: str, talk: bool) -> None:
        self.link, self.label, self.args = link, label, [label]
        self.pid = 0
        self.returncode: int | None = None
        self._ended = threading.Event()
        self.stdin = self.stdout = self._out = None
        if talk:
            r, w = os.pipe()
            with contextlib.suppress(OSError):  # a larger pipe: the host's reports rarely wait
                fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
            self.stdout = os.fdopen(r, "r", buffering=1)
            self._out = os.fdopen(w, "w", buffering=1)
            self.stdin = _Stdin(link, label)

    # ---- fed by the host's thread --------------------------------------------------------
    def _lines(self, lines: list[str]) -> None:
        if self._out is not None and lines:
            with contextlib.suppress(OSError, ValueError):  # the reader closed its end
                self._out.write("".join(lines))
                self._out.flush()

    def _eof(self) -> None:
        if self._out is not None:
            with contextlib.suppress(OSError):
                self._out.close()

    def _end(self, code: int) -> None:
        self._eof()
        self.returncode = code
        self._ended.set()

    # ---- Popen's interface ---------------------------------------------------------------
    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ray.exceptions.RayError):
                ray.get(self.link.actor.kill.remote(self.label))

    def communicate(self, input: str | None = None, timeout: float | None = None,
                    ) -> tuple[str | None, None]:
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.stdin is not None:
            if input:
                self.stdin.write(input)
            self.stdin.close()
        said = None
        if self.stdout is not None:
            chunks = []
            with selectors.DefaultSelector() as sel:
                sel.register(self.stdout.fileno(), selectors.EVENT_READ)
                while True:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and (left <= 0 or not sel.select(left)):
                        raise subprocess.TimeoutExpired(self.args, timeout)
                    chunk = os.read(self.stdout.fileno(), 1 << 16)
                    if not chunk:
                        break
                    chunks.append(chunk)
            said = b"".join(chunks).decode(errors="replace")
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return said, None


class HostLink:
    """The driver's side of one host's HostProcesses: starts processes there, feeds their
    RemoteProcess from the host's reports, appends their logs to the run directory."""

    def __init__(self, ledger: Ledger, host: str, out: Path, program: str,
                 unprivileged: bool) -> None:
        connect(ledger.extra["cluster"])
        node = next((n for n in alive() if n.get("Labels", {}).get(LABEL) == host), None)
        if node is None:
            from testbed.errors import NetworkError

            raise NetworkError(f"host {host} has no live Ray node labelled {LABEL}={host}")
        self.host, self.out = host, out
        self.actor = HostProcesses.options(scheduling_strategy=on(node)).remote(
            ledger, program, unprivileged)
        self.procs: dict[str, RemoteProcess] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True,
                                        name=f"processes-on-{host}")
        self._thread.start()

    def ready(self) -> None:
        """Wait until the host's actor runs (a second or so)."""
        ray.get(self.actor.where.remote(), timeout=120)

    def spawn(self, node: str, label: str, config: dict, talk: bool) -> RemoteProcess:
        if "trace" in config:
            config = {**config, "trace": str(Path(config["trace"]).relative_to(self.out))}
        proc = RemoteProcess(self, label, talk)
        self.procs[label] = proc
        proc.pid = ray.get(self.actor.spawn.remote(node, label, config, talk))
        return proc

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                news = ray.get(self.actor.follow.remote(FOLLOW_S))
            except ray.exceptions.RayError as e:  # the host's actor is gone: so are its tasks
                if self._stop.is_set():
                    return
                for proc in self.procs.values():
                    if proc.returncode is None:
                        self._append(proc.label, f"\nlost with host {self.host}: "
                                     f"{type(e).__name__}\n".encode())
                        proc._end(-9)
                return
            for label, (lines, log, eof, code) in news.items():
                proc = self.procs.get(label)
                if proc is None:
                    continue
                self._append(label, log)  # before the end is seen: its last line is there
                proc._lines(lines)
                if eof:
                    proc._eof()
                if code is not None:
                    proc._end(code)

    def _append(self, label: str, data: bytes) -> None:
        if data:
            with open(self.out / "logs" / f"{label}.log", "ab") as f:
                f.write(data)

    def usage(self, nodes: list[str]) -> dict[str, tuple[float, int] | None]:
        """What the host reads for its `nodes` (none if it does not answer: a lost host)."""
        try:
            return ray.get(self.actor.usage.remote(nodes), timeout=30)
        except (ray.exceptions.RayError, TimeoutError):
            return {}

    def finish(self) -> None:
        """Every trace back into the run directory; the host's actor ends. A host lost
        meanwhile loses its traces: said in logs/host.<host>.log, the rest is kept."""
        try:
            traces = ray.get(self.actor.finish.remote(), timeout=300)
        except ray.exceptions.RayError as e:
            traces = {}
            (self.out / "logs" / f"host.{self.host}.log").write_text(
                f"traces of the processes on host {self.host} are lost: {e}\n")
        finally:
            self._stop.set()
            self._thread.join(timeout=5)
            with contextlib.suppress(ray.exceptions.RayError):
                ray.kill(self.actor)
        for rel, data in traces.items():
            (self.out / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.out / rel).write_bytes(data)
