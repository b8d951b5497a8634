"""SSH sessions to physical devices (paramiko): key authentication, host keys verified against
known_hosts, a password only from an environment variable, and reconnection with backoff.

A session never logs or returns the password; errors name the device and the fix.
"""

from __future__ import annotations

import logging
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from testbed.errors import CapabilityError, NetworkError

# paramiko logs every failed connection with a traceback; the testbed reports it in one line
logging.getLogger("paramiko").setLevel(logging.CRITICAL)

CONNECT_TIMEOUT_S = 5.0


class DeviceUnreachable(NetworkError):
    """A device could not be reached over SSH (after retrying with backoff)."""


@dataclass(frozen=True)
class Endpoint:
    """Where and how to log in to one device (from the topology's `ssh:` entry)."""

    node: str
    host: str
    user: str = "root"
    port: int = 22
    key: str | None = None
    password_env: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"

    @classmethod
    def of(cls, node: str, ssh: dict) -> Endpoint:
        return cls(node=node, **{k: v for k, v in ssh.items() if v is not None})

    @property
    def where(self) -> str:
        return f"device {self.node} ({self.user}@{self.host}:{self.port})"

    @property
    def known_hosts_path(self) -> Path:
        return Path(os.path.expanduser(self.known_hosts))

    def host_key_name(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def connect(ep: Endpoint, accept_new_host_keys: bool = False,
            timeout: float = CONNECT_TIMEOUT_S) -> paramiko.SSHClient:
    """A logged-in client. Unknown host keys are refused unless `accept_new_host_keys` (then
    saved to known_hosts); a changed host key is always refused."""
    client = paramiko.SSHClient()
    kh = ep.known_hosts_path
    if kh.exists():
        client.load_host_keys(str(kh))
    client.set_missing_host_key_policy(
        paramiko.AutoAddPolicy() if accept_new_host_keys else paramiko.RejectPolicy())
    password = os.environ.get(ep.password_env) if ep.password_env else None
    if ep.password_env and password is None:
        raise CapabilityError(f"{ep.where}: environment variable {ep.password_env} (ssh."
                              "password_env) is not set; export it or use a key")
    key = os.path.expanduser(ep.key) if ep.key else None
    if key and not os.path.exists(key):
        raise CapabilityError(f"{ep.where}: ssh.key {ep.key} does not exist")
    try:
        client.connect(ep.host, port=ep.port, username=ep.user, key_filename=key,
                       password=password, timeout=timeout, banner_timeout=timeout,
                       auth_timeout=timeout, allow_agent=False, look_for_keys=False)
    except paramiko.BadHostKeyException:
        client.close()
        raise CapabilityError(
            f"{ep.where}: its host key does not match the one in {kh} (a re-installed board, "
            "or someone in between); refusing to connect. If the board was re-installed, "
            f"remove the old key with `ssh-keygen -f {kh} -R '{ep.host_key_name()}'`") from None
    except paramiko.SSHException as e:
        client.close()
        if "not found in known_hosts" in str(e):
            raise CapabilityError(
                f"{ep.where}: its host key is not in {kh}; check it and add it "
                f"(`ssh-keyscan -p {ep.port} {ep.host} >> {kh}`) or pass "
                "--accept-new-host-keys") from None
        if isinstance(e, paramiko.AuthenticationException):
            raise CapabilityError(f"{ep.where}: authentication failed; check ssh.user and "
                                  "ssh.key (or ssh.password_env)") from None
        raise DeviceUnreachable(f"{ep.where}: {e}") from None
    except (OSError, EOFError) as e:
        client.close()
        raise DeviceUnreachable(f"{ep.where}: cannot connect ({e})") from None
    if accept_new_host_keys:
        kh.parent.mkdir(parents=True, exist_ok=True)
        client.save_host_keys(str(kh))
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(2)
    return client


@dataclass
class Result:
    code: int
    out: str
    err: str


class Session:
    """One device's SSH connection, reopened with exponential backoff when it drops."""

    def __init__(self, ep: Endpoint, accept_new_host_keys: bool = False,
                 retry_for_s: float = 30.0) -> None:
        self.ep = ep
        self.accept_new = accept_new_host_keys
        self.retry_for_s = retry_for_s
        self.client: paramiko.SSHClient | None = None
        self.reconnects = 0  # connections opened again after the first one
        self._connected_once = False

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def _alive(self) -> bool:
        t = self.client.get_transport() if self.client else None
        return bool(t and t.is_active())

    def ensure(self) -> paramiko.SSHClient:
        """The connection, reconnecting with backoff (0.25 s doubling to 4 s) if needed."""
        if self._alive():
            return self.client
        self.close()
        delay, deadline = 0.25, time.monotonic() + self.retry_for_s
        while True:
            try:
                self.client = connect(self.ep, self.accept_new)
                self.reconnects += self._connected_once
                self._connected_once = True
                return self.client
            except DeviceUnreachable:
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 4.0)

    def run(self, command: str, timeout: float = 60.0, check: bool = False) -> Result:
        """Run a shell command on the device; a dropped connection is reopened and the command
        retried once (commands sent here are idempotent set-up and queries)."""
        for attempt in (1, 2):
            client = self.ensure()
            try:
                _, out, err = client.exec_command(command, timeout=timeout)
                o, e = out.read().decode(errors="replace"), err.read().decode(errors="replace")
                code = out.channel.recv_exit_status()
                if code == -1:  # no exit status: the connection dropped mid-command, so the
                    # output may be cut short; never hand back a partial answer as a whole one
                    raise paramiko.SSHException("connection lost before the command ended")
                res = Result(code, o, e)
                break
            except (paramiko.SSHException, EOFError, OSError) as ex:
                self.close()
                if attempt == 2:
                    raise DeviceUnreachable(f"{self.ep.where}: {command[:40]}...: {ex}") from None
        if check and res.code != 0:
            raise NetworkError(f"{self.ep.where}: `{command[:200]}` failed ({res.code}): "
                               f"{(res.err or res.out).strip()[-500:]}")
        return res

    def sftp(self) -> paramiko.SFTPClient:
        return self.ensure().open_sftp()


def quote(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)
