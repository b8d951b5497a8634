"""Run one command on a device as a local process: `python -m testbed.devices.remote SPEC -- ARGV`.

The local process relays the remote command's stdout and stderr and exits with its exit code,
so the rest of the testbed (exec, measurements, the runner) handles a device's processes as
ordinary `subprocess.Popen` objects. Killing the local process kills the remote one: the remote
side watches its stdin, which closes when the SSH connection does. A device that cannot be
reached, or a connection that closes, ends the command with exit code 255 and the reason on
stderr.
"""

from __future__ import annotations

import json
import os
import select
import sys

import paramiko

from testbed.devices.ssh import Endpoint, Session, quote
from testbed.errors import TestbedError

EXIT_UNREACHABLE = 255

# `"$@"` runs in the background; a watcher reading the channel's stdin (saved as fd 3: a
# background job's own stdin is /dev/null) kills it when the connection goes away.
WRAPPER = ('exec 3<&0; "$@" & p=$!; (cat <&3 >/dev/null; kill -9 $p 2>/dev/null) & w=$!; '
           'wait $p; r=$?; kill $w 2>/dev/null; exit $r')


def remote_command(argv: list[str], cwd: str | None = None, env: dict | None = None) -> str:
    """The shell command line run on the device for `argv`."""
    prefix = f"cd {quote([cwd])} && " if cwd else ""
    exports = "".join(f"export {k}={quote([v])}; " for k, v in (env or {}).items())
    return f"{prefix}{exports}sh -c {quote([WRAPPER])} sh {quote(argv)}"


def local_argv(ssh: dict, node: str, argv: list[str], cwd: str | None = None,
               env: dict | None = None) -> list[str]:
    """The local command line that runs `argv` on the device."""
    spec = json.dumps({"node": node, "ssh": ssh, "cwd": cwd, "env": env or {}})
    return [sys.executable, "-m", "testbed.devices.remote", spec, "--", *argv]


def main(args: list[str]) -> int:
    spec = json.loads(args[0])
    argv = args[args.index("--") + 1:]
    ep = Endpoint.of(spec["node"], spec["ssh"])
    try:
        session = Session(ep, retry_for_s=10)
        chan = session.ensure().get_transport().open_session()
        chan.exec_command(remote_command(argv, spec.get("cwd"), spec.get("env")))
    except TestbedError as e:
        print(f"testbed: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except (paramiko.SSHException, EOFError, OSError) as e:  # dropped between connect and exec
        print(f"testbed: {ep.where}: connection lost ({type(e).__name__})", file=sys.stderr)
        return EXIT_UNREACHABLE
    out, err = sys.stdout.buffer, sys.stderr.buffer
    while True:
        select.select([chan], [], [], 1.0)
        while chan.recv_ready():
            out.write(chan.recv(65536))
            out.flush()
        while chan.recv_stderr_ready():
            err.write(chan.recv_stderr(65536))
            err.flush()
        if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
            code = chan.recv_exit_status()  # -1: the channel closed without an exit status
            if code >= 0:
                return code
        transport = chan.get_transport()
        if chan.closed or transport is None or not transport.is_active():
            print(f"testbed: {ep.where}: connection lost", file=sys.stderr)
            return EXIT_UNREACHABLE


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(code)
