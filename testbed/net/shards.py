"""Switch daemons: on the userspace datapath, a topology's switches are spread over several
ovs-vswitchd processes, each with a handful of bridges, in a network namespace of its own.

Why: ovs-vswitchd's main thread polls every userspace port once per wake-up (one `recvmmsg`
each, ~4 us here), and a packet waits one wake-up per hop, so the cost of a hop grows with the
ports of the daemon that forwards it (docs/benchmarks.md "Where a userspace hop goes": 0.17 ms
per hop with 16 ports, 1.7 ms with 416, 5 ms with 1,216). With at most `per_daemon` switches
per daemon a hop costs about the same at 300 nodes as at 10. Two userspace datapaths cannot
share a namespace (each opens the tap `ovs-netdev`), hence one namespace per daemon; the
switch-side ends of the node ports and links are made in it, so every link is still a shaped
veth pair and every node still has its own switch. The switches reach the one controller over
its Unix socket (`of.sock` in the state directory, linked from each daemon's run directory),
which crosses namespaces; on the hosts of a split topology a relay listens there instead and
carries the connection to the controller over TLS (testbed/net/ofrelay.py).

Daemon k runs in namespace `tb-<testbed>._sw<k>` (a name no node can have), so `down` stops
it with the nodes' processes and removes its namespace with theirs, also after a SIGKILL.
Daemon 0 is the host's own Open vSwitch: devices' tunnels and every switch on the kernel
datapath (which has no such polling) stay there.
"""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from testbed.errors import NetworkError
from testbed.naming import Names
from testbed.net import netns

# Measured (bench/fabric_rtt.py, 100-node mesh): 0.6 ms per hop with 8 switches per daemon,
# 0.36-0.48 with 6, 0.33-0.37 with 4; each daemon costs ~25 MB (ovsdb-server + ovs-vswitchd).
DEFAULT_PER_DAEMON = 4
SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
OVS_START_TIMEOUT_S = 60.0


def assign(kinds: dict[str, str], per_daemon: int | None, datapath: str) -> dict[str, int]:
    """Node -> daemon index (0: the host's own Open vSwitch). Nodes that must stay on the
    host's namespace (devices: their tunnel) and every node on the kernel datapath get 0;
    `per_daemon` 0 puts everything in daemon 0 (one daemon, the layout before sharding)."""
    per = DEFAULT_PER_DAEMON if per_daemon is None else per_daemon
    local = [n for n, kind in kinds.items() if kind != "device"]
    out = {n: 0 for n in kinds}
    if datapath != "netdev" or per == 0 or len(kinds) <= per:
        return out
    for i, n in enumerate(local):
        out[n] = 1 + i // per
    return out


def daemons(place: dict[str, int]) -> list[int]:
    """The daemons in use besides the host's (1..K)."""
    return sorted({k for k in place.values() if k})


def namespace(names: Names, k: int) -> str | None:
    """The namespace of daemon k (None for 0: this process's namespace)."""
    return None if k == 0 else f"{names.netns_prefix}_sw{k}"


def run_dir(names: Names, k: int) -> Path:
    return names.state_dir / f"ovs{k}"


def db(names: Names, k: int) -> str | None:
    """The OVSDB remote of daemon k (None: the host's default)."""
    return None if k == 0 else f"unix:{run_dir(names, k)}/db.sock"


def controller_target(names: Names, k: int, of_port: int) -> str:
    """Daemon 0 reaches the controller over TCP, the others through their run directory (the
    only place ovs-vswitchd accepts a Unix controller socket), where a link points at the
    controller's of.sock."""
    return f"tcp:127.0.0.1:{of_port}" if k == 0 else f"unix:{run_dir(names, k)}/controller.sock"


def start(names: Names, ks: list[int], relayed: bool = False) -> None:
    """Make each daemon's namespace, then start its ovsdb-server and ovs-vswitchd in it (all
    daemons at once). `relayed`: the controller is on another machine, and the host's relay
    (testbed/net/ofrelay.py) will listen at each daemon's controller.sock. Raises
    NetworkError with the daemon's log when one does not start."""
    netns.create([namespace(names, k) for k in ks])
    with ThreadPoolExecutor(max_workers=min(8, len(ks) or 1)) as pool:
        for _ in pool.map(lambda k: _start_one(names, k, relayed), ks):
            pass


def _start_one(names: Names, k: int, relayed: bool) -> None:
    d = run_dir(names, k)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not relayed:
        (d / "controller.sock").symlink_to(names.state_dir / "of.sock")
    env = {**os.environ, "OVS_RUNDIR": str(d), "OVS_LOGDIR": str(d), "OVS_DBDIR": str(d)}
    inside = ["ip", "netns", "exec", namespace(names, k)]
    common = ["--no-chdir", "--detach", f"--log-file={d}/%s.log", f"--pidfile={d}/%s.pid",
              f"--unixctl={d}/%s.ctl", "-vconsole:emer", "-vsyslog:err", "-vfile:info"]

    def opts(daemon: str) -> list[str]:
        return [o.replace("%s", daemon) for o in common]

    steps = [["ovsdb-tool", "create", f"{d}/conf.db", str(SCHEMA)],
             [*inside, "ovsdb-server", f"{d}/conf.db", f"--remote=punix:{d}/db.sock",
              *opts("ovsdb-server")],
             ["ovs-vsctl", f"--db=unix:{d}/db.sock", "--no-wait", "init"],
             [*inside, "ovs-vswitchd", f"unix:{d}/db.sock", *opts("ovs-vswitchd")]]
    for argv in steps:
        try:
            res = subprocess.run(argv, env=env, capture_output=True, text=True,
                                 timeout=OVS_START_TIMEOUT_S, check=False)
        except (subprocess.TimeoutExpired, FileNotFoundError) as e:
            raise NetworkError(f"switch daemon {k}: {argv[0] if argv[0] != 'ip' else argv[4]}"
                               f" did not start: {e}") from None
        if res.returncode != 0:
            log = next((p.read_text()[-800:] for p in d.glob("*.log")), "")
            raise NetworkError(f"switch daemon {k}: `{' '.join(argv[:6])}` failed: "
                               f"{res.stderr.strip()[:400]} {log}")


def cpu_seconds(names: Names) -> float:
    """CPU time the testbed's own switch daemons have used since `up`: what forwarding costs
    the host outside every node's quota (`status` shows it)."""
    ticks = 0
    for pidfile in names.state_dir.glob("ovs*/ovs-vswitchd.pid"):
        try:
            stat = Path(f"/proc/{int(pidfile.read_text())}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, ValueError):
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


def of_node(ledger_extra: dict, node: str) -> int:
    """The daemon serving `node`'s switch in a running testbed (0 when not sharded)."""
    return int(ledger_extra.get("switch_daemon_of", {}).get(node, 0))


def port_namespaces(names: Names, ledger_extra: dict, links: list[dict]
                    ) -> dict[str, str | None]:
    """Every link-end interface -> the namespace it lives in (None: the host's)."""
    out = {}
    for i, lk in enumerate(links):
        for end, node in enumerate(lk["between"]):
            out[names.link_port(i, end)] = namespace(names, of_node(ledger_extra, node))
    return out
