"""Task processes of a run on host, docker and device nodes, for every workload kind: each
gets its configuration (written beside the run and handed to the node the way its kind
moves files), a log file, and, if it writes a trace, a trace path the node can write to;
traces come back from containers and boards at the end (on the testbed's clock). Nodes on
a host of a cluster-built topology run theirs through that host (testbed/experiment/remote.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from testbed import lifecycle, nodes
from testbed.errors import NetworkError
from testbed.net.ledger import Ledger
from testbed.nodes.base import Files

if TYPE_CHECKING:
    from testbed.experiment.remote import HostLink


class Processes:
    def __init__(self, ledger: Ledger, out: Path, program: str, unprivileged: bool) -> None:
        self.ledger, self.out, self.program, self.unprivileged = ledger, out, program, unprivileged
        for sub in ("logs", "configs"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        self.files: dict[str, Files] = {}  # node -> how its files travel
        self.traces: list[tuple[Files, Path]] = []  # traces to bring back
        self.hosts: dict[str, HostLink] = {}  # cluster host -> its processes of this run
        self.finished = False

    def start(self) -> Processes:
        """On a topology built through a cluster: start each host's actor now, not when the
        first unit starts (it takes a second or so). finish() ends them."""
        remote = {nodes.cluster_host(self.ledger, n) for n in self.ledger.topology["nodes"]}
        remote.discard(None)
        if remote and not self.hosts:
            from testbed.experiment.remote import HostLink

            self.hosts = {h: HostLink(self.ledger, h, self.out, self.program, self.unprivileged)
                          for h in sorted(remote)}
            for link in self.hosts.values():
                link.ready()
        return self

    def spawn(self, node: str, label: str, config: dict, talk: bool = False) -> subprocess.Popen:
        """Start workloads/<program> on `node` with `config` (its "trace", if any, is a path
        in the run directory: the process gets one it can write on its node; its "start_at",
        if any, a testbed time, is moved onto the node's clock). With `talk`,
        its stdin and stdout are pipes to this process (orders in, events out) and only
        stderr goes to the log."""
        kind = nodes.of_node(self.ledger, node)
        host = nodes.cluster_host(self.ledger, node)
        if host is not None:  # started by that host (maybe another machine)
            (self.out / "configs" / f"{label}.json").write_text(json.dumps(config, indent=1))
            (self.out / "logs" / f"{label}.log").write_bytes(b"")  # fed as it grows there
            return self.start().hosts[host].spawn(node, label, config, talk)
        if node not in self.files:
            self.files[node] = kind.files(self.ledger, node, self.unprivileged)
        files = self.files[node]
        drop = self.unprivileged and kind.local  # a device: as its SSH user anyway
        if "start_at" in config:  # a moment to start at, on the node's own clock
            config = {**config, "start_at": files.node_clock(config["start_at"])}
        if "trace" in config:
            trace = Path(config["trace"])
            config = {**config, "trace": files.trace_path(trace)}
            self.traces.append((files, trace))
            if drop:  # the only file the task writes: its trace, made and handed over here
                Path(config["trace"]).touch()
                os.chown(config["trace"], lifecycle.UNPRIVILEGED_UID, lifecycle.UNPRIVILEGED_UID)
        cfg_path = files.put(self.out / "configs" / f"{label}.json", json.dumps(config, indent=1))
        log = open(self.out / "logs" / f"{label}.log", "wb")  # noqa: SIM115
        argv, env = lifecycle.workload_command(self.ledger, node, self.program)
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": log,
                 "text": True, "bufsize": 1} if talk else \
            {"stdout": log, "stderr": subprocess.STDOUT}
        p = lifecycle.popen_in(self.ledger, node, [*argv, cfg_path], unprivileged=drop,
                            env={**os.environ, **env}, **pipes)
        log.close()
        return p

    def answers(self, asked: dict[str, tuple[str, dict]], timeout_s: float,
                together: bool = False) -> dict[str, dict]:
        """Run one question per label at once (label -> (node, config)), each answered by the
        process as one JSON line on stdout (e.g. a profile); raises NetworkError naming the
        first that failed or the time limit, and leaves none running. A process may go on
        working after its answer (a profile holding its node busy while the others measure):
        all are stopped only once every answer is in. With `together` (profiles), each
        process first says it is ready (a line) and waits for a go on stdin, given once all
        are ready, so that none measures while another is still starting."""
        extra = {"together": True} if together else {}
        procs = {label: self.spawn(node, label, {**config, **extra}, talk=True)
                 for label, (node, config) in asked.items()}
        deadline, kept = time.monotonic() + timeout_s, {}
        out = {}
        try:
            if together:
                for label, proc in procs.items():
                    self._line(label, asked[label][0], proc, list(procs), deadline, timeout_s,
                               kept)
                for proc in procs.values():
                    # a process that cannot hear it (ended, or on a board, whose processes
                    # read no stdin: its CPU is its own) has measured already
                    with contextlib.suppress(OSError):
                        proc.stdin.write("go\n")
                        proc.stdin.flush()
            for label, proc in procs.items():
                out[label] = json.loads(self._line(label, asked[label][0], proc, list(procs),
                                                   deadline, timeout_s, kept))
        finally:
            self.stop(list(procs.values()))
        return out

    def _line(self, label: str, node: str, proc: subprocess.Popen, labels: list[str],
              deadline: float, timeout_s: float, kept: dict[int, bytes]) -> str:
        said = _next_line(proc, deadline, kept)
        if said is None:
            raise NetworkError(f"{', '.join(labels)}: no answer within {timeout_s:.0f} s")
        if not said.strip():
            proc.wait(timeout=5)
            raise NetworkError(f"{label} on {node} failed: {self.last_log_line(label)}")
        return said

    def usage(self, nodes_by_host: dict[str | None, list[str]]) -> dict:
        """node -> (CPU seconds, memory bytes) or None, read where each node lives (None:
        this machine)."""
        out = {}
        for host, names in nodes_by_host.items():
            if host is None:
                out.update({n: nodes.of_node(self.ledger, n).usage(self.ledger, n)
                            for n in names})
            else:
                out.update(self.hosts[host].usage(names))
        return out

    def testbed_clock(self, node: str, t):
        """Times `node` stamped (seconds; a number or a pandas Series) on the testbed's clock:
        a board's clock may be off, a host's and a container's are this one."""
        files = self.files.get(node)
        return t if files is None else files.testbed_clock(t)

    def last_log_line(self, label: str) -> str:
        try:
            lines = (self.out / "logs" / f"{label}.log").read_text().strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else "(no output; killed by a signal?)"

    def finish(self) -> None:
        """Bring back traces written in containers or on devices, then remove the directories
        that only carried this run's files."""
        if self.finished:  # once, however often called (the nodes' clocks stay known)
            return
        self.finished = True
        for link in self.hosts.values():
            link.finish()
        for files, trace in self.traces:
            files.fetch(trace)
        for files in self.files.values():
            files.close()

    @staticmethod
    def stop(procs: list[subprocess.Popen]) -> None:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)


def _next_line(proc: subprocess.Popen, deadline: float, kept: dict[int, bytes]) -> str | None:
    """The next line `proc` writes to stdout ("" if it ended without one; None: not by
    `deadline`). Reads the pipe itself, as the process may keep running after it; what came
    after the line waits in `kept` (by pipe) for the next call."""
    fd = proc.stdout.fileno()
    got = kept.pop(fd, b"")
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in got:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            got += chunk
    line, _, rest = got.partition(b"\n")
    kept[fd] = rest
    return line.decode(errors="replace")
