"""A "fake board" for tests and benchmarks: a real OpenSSH server in its own network namespace,
reached over a management veth, with a throwaway host key and client key.

It plays a physical device: the testbed logs in with paramiko, checks it, builds a VXLAN tunnel
to it and runs commands on it exactly as it would on a Jetson. Everything it makes is named
`tbt-board<N>` / `tbtb<N>...` and removed by close(), also when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"


class FakeBoard:
    def __init__(self, workdir: Path, index: int = 0, tegrastats: str | None = None,
                 clock_shift_s: float = 0.0, python: str | None = None) -> None:
        """`tegrastats`: a recorded line the board's `tegrastats` command replays (a Jetson).
        `clock_shift_s`: the board's clock runs this far ahead, as seen by Python programs
        there (a sitecustomize shifts time.time and time.time_ns), the way a real board's
        unsynchronised clock would. `python`: the interpreter the board's `python3` runs (one
        with torch, as a Jetson has its own; default: this host's /usr/bin/python3)."""
        self.dir = workdir / f"board{index}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.index = index
        self.netns = f"tbt-board{index}"
        self.host_if, self.board_if = f"tbtb{index}h", f"tbtb{index}d"
        self.host_ip, self.ip = f"172.31.{250 - index}.1", f"172.31.{250 - index}.2"
        self.key = self.dir / "id_ed25519"
        self.known_hosts = self.dir / "known_hosts"
        self.sshd: subprocess.Popen | None = None
        self.tegrastats = tegrastats
        self.clock_shift_s = clock_shift_s
        self.python = python

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FakeBoard:
        self.close()
        for cmd in (["ip", "netns", "add", self.netns],
                    ["ip", "link", "add", self.host_if, "type", "veth", "peer", "name",
                     self.board_if],
                    ["ip", "link", "set", self.board_if, "netns", self.netns],
                    ["ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if],
                    ["ip", "link", "set", self.host_if, "up"],
                    *[["ip", "netns", "exec", self.netns, *c] for c in (
                        ["ip", "addr", "add", f"{self.ip}/30", "dev", self.board_if],
                        ["ip", "link", "set", self.board_if, "up"],
                        ["ip", "link", "set", "lo", "up"])]):
            subprocess.run(cmd, check=True, capture_output=True)
        for f in (self.key, self.dir / "host_key"):
            if not f.exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(f)],
                               check=True)
        bin_dir = self.dir / "bin"
        bin_dir.mkdir(exist_ok=True)
        if self.tegrastats:
            (bin_dir / "tegrastats").write_text(
                f"#!/bin/sh\nwhile true; do echo '{self.tegrastats}'; sleep 1; done\n")
            (bin_dir / "tegrastats").chmod(0o755)
        if self.python:  # a wrapper, not a link: a venv's interpreter finds its packages
            (bin_dir / "python3").write_text(f'#!/bin/sh\nexec {self.python} "$@"\n')
            (bin_dir / "python3").chmod(0o755)
        # HOME is the board's own directory: a login must not run this host's root dotfiles
        # (a killed session can leave them stuck, e.g. on a pyenv lock, hanging later logins)
        env = (f"HOME={self.dir} "
               f"PATH={bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        if self.clock_shift_s:
            shift = self.dir / "clockshift"
            shift.mkdir(exist_ok=True)
            (shift / "sitecustomize.py").write_text(
                "import time\n_t, _tn = time.time, time.time_ns\n"
                f"time.time = lambda: _t() + {self.clock_shift_s!r}\n"
                f"time.time_ns = lambda: _tn() + {int(self.clock_shift_s * 1e9)}\n")
            env += f" PYTHONPATH={shift}"
        (self.dir / "authorized_keys").write_text((self.dir / "id_ed25519.pub").read_text())
        self.known_hosts.write_text(f"{self.ip} {(self.dir / 'host_key.pub').read_text()}")
        (self.dir / "sshd_config").write_text(
            f"ListenAddress {self.ip}\nPort 22\nHostKey {self.dir}/host_key\n"
            f"AuthorizedKeysFile {self.dir}/authorized_keys\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            f"StrictModes no\nPidFile {self.dir}/sshd.pid\nSubsystem sftp internal-sftp\n"
            "LogLevel ERROR\nMaxStartups 50\nMaxSessions 50\n"
            f"SetEnv {env}\n")
        self.start_sshd()
        return self

    def start_sshd(self) -> None:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        self.sshd = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, SSHD, "-D", "-e", "-f",
             str(self.dir / "sshd_config")], stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "sshd.log", "ab"))  # noqa: SIM115
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((self.ip, 22), 0.5):
                return
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not start: {(self.dir / 'sshd.log').read_text()[-500:]}")

    def stop_sshd(self) -> None:
        """Kill our sshd and every session it forked: connections drop as if the board
        rebooted."""
        if self.sshd is None:
            return
        for pid in [*_descendants(self.sshd.pid), self.sshd.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.sshd.wait()
        self.sshd = None

    def join(self, netns: str, subnet: str) -> FakeBoard:
        """Also wire the board to namespace `netns` (a "host" of a split topology), routing
        `subnet` (the hosts' network) that way: its tunnel then runs to that host while SSH
        still comes from this machine."""
        near, far = f"172.30.{250 - self.index}.1", f"172.30.{250 - self.index}.2"
        mine, theirs = f"tbtj{self.index}d", f"tbtj{self.index}h"
        for cmd in (["ip", "-n", self.netns, "link", "add", mine, "type", "veth", "peer",
                     "name", theirs, "netns", netns],
                    ["ip", "-n", self.netns, "addr", "add", f"{far}/30", "dev", mine],
                    ["ip", "-n", self.netns, "link", "set", mine, "up"],
                    ["ip", "-n", self.netns, "route", "add", subnet, "via", near],
                    ["ip", "-n", netns, "addr", "add", f"{near}/30", "dev", theirs],
                    ["ip", "-n", netns, "link", "set", theirs, "up"],
                    ["ip", "-n", netns, "route", "add", f"{self.ip}/32", "via", far]):
            subprocess.run(cmd, check=True, capture_output=True)
        return self

    def close(self) -> None:
        self.stop_sshd()
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)

    # ---- what a topology needs ---------------------------------------------------------------
    def ssh_yaml(self) -> str:
        return (f"{{host: {self.ip}, user: root, key: {self.key}, "
                f"known_hosts: {self.known_hosts}}}")

    def run(self, *cmd: str) -> subprocess.CompletedProcess:
        """A command run directly in the board's namespace (to look at it from outside)."""
        return subprocess.run(["ip", "netns", "exec", self.netns, *cmd], capture_output=True,
                              text=True)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out
