"""The library surface the CLI and Python users call: a testbed's life (up, status, exec,
down), offline scheduling and simulation, and the host's capabilities. It never prints;
progress goes through a callback.

    from testbed import api
    ledger = api.up("topologies/demo.yaml")
    api.run_in_node(ledger.name, "e1", ["ping", "-c", "1", "10.0.0.2"])
    api.down(ledger.name)
"""

from __future__ import annotations

from pathlib import Path

from testbed import nodes
from testbed.dynamics import (  # noqa: F401 (re-exported: live changes)
    links,
    set_link,
    set_link_state,
    start_node,
    stop_node,
)
from testbed.errors import InputError
from testbed.experiment.options import RunOptions  # noqa: F401 (re-exported)
from testbed.lifecycle import (  # noqa: F401 (re-exported: this is the users' surface)
    DROP_PRIVILEGES,
    UNPRIVILEGED_UID,
    check,
    down,
    down_all,
    exec_in_node,
    in_node,
    link_interface,
    load_topology,
    popen,
    reconnect,
    resolve,
    run_in_node,
    set_node,
    status,
    testbeds,
    up,
    workload_command,
)
from testbed.net import shards
from testbed.net.ledger import known_testbeds  # noqa: F401 (re-exported)
from testbed.net.probe import probe
from testbed.routing import FlowSpec  # noqa: F401 (re-exported: flows are added with it)
from testbed.schedulers.offline import simulate  # noqa: F401
from testbed.topology import load


def doctor(topology: str | Path | None = None, accept_new_host_keys: bool = False) -> dict:
    """This host's capabilities; with a topology, also what each of its nodes that live
    elsewhere (devices) offers or lacks."""
    out = probe().to_dict()
    if topology is not None:
        topo = load(topology)
        out["devices"] = {}
        for kind in nodes.KINDS.values():
            members = [n for n in topo.nodes if n.kind == kind.name]
            if members:
                out["devices"].update(kind.diagnose(members, accept_new_host_keys))
    return out


def version() -> str:
    """The installed package's version and, in a git checkout, its commit."""
    import importlib.metadata as md
    import subprocess

    try:
        v = md.version("edge-testbed")
    except md.PackageNotFoundError:
        v = "unknown"
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return f"{v} ({commit})" if commit else v


def topology_schema() -> dict:
    """The JSON Schema of topology files."""
    from testbed.topology.schema import TopologyFile

    return TopologyFile.model_json_schema()


def schedule(topology: str | Path, workload_file: str | Path, scheduler: str, *args, **kwargs):
    """`testbed schedule`: one decision of `scheduler` on the workload file, no network (the
    workload kinds are imported here, not with the API: they bring pandas and torch)."""
    from testbed.kinds import schedule as decide

    return decide(topology, workload_file, scheduler, *args, **kwargs)


def schedulers() -> list[tuple[str, str, str]]:
    """(name, workload kind it plans, what it does) of every registered scheduler."""
    import testbed.kinds  # noqa: F401 (each kind registers its schedulers)
    from testbed.schedulers import entries

    return [(e.name, e.kind, e.summary) for e in sorted(entries(), key=lambda e: e.kind)]


def load_plugins(modules: list[str] | None) -> None:
    """Import scheduler plug-ins (module names or .py files); they register themselves."""
    from testbed.schedulers.plugins import load_module

    for m in modules or []:
        load_module(m)


def train_policy(policy: str, edges: int, requests: int, minutes: float, out: str | Path,
                 seed: int = 0, progress=lambda fraction, row: None) -> dict:
    """Train a learned dispatch policy (only `corais` so far) on generated instances."""
    if policy != "corais":
        raise InputError(f"train-policy {policy!r}: only corais is a learned policy; "
                         "fix: testbed train-policy corais ...")
    if not (1 <= edges <= 500 and 1 <= requests <= 10_000 and minutes > 0):
        raise InputError("train-policy: --edges 1-500, --requests 1-10000, --minutes > 0")
    from testbed.kinds.requests.corais import train_to_file

    return train_to_file(edges, requests, minutes, Path(out), seed, progress)


def flows(name: str | None = None):
    """A client of the running testbed's flow API (add, list, remove paths and rates)."""
    from testbed.sdn import FlowClient

    return FlowClient(resolve(name))


def experiment(name: str | None, workload: str | Path, opts, progress=lambda s: None):
    """`testbed run`: one experiment on the running testbed; returns its per-job table."""
    from testbed.kinds import run as run_experiment

    return run_experiment(name, workload, opts, progress)


def campaign(path: str | Path, **kwargs):
    """`testbed campaign`: run (or with dry_run=True, list) a campaign's pending trials."""
    from testbed.campaign.run import run_campaign

    return run_campaign(path, **kwargs)


def export_campaign(results: str | Path, fmt: str = "csv") -> list[Path]:
    from testbed.campaign.export import export

    return export(Path(results), fmt)


def plot_campaign(results: str | Path, formats: tuple[str, ...] = ("png", "pdf"),
                  size: tuple[float, float] = (6.0, 4.0), dpi: int = 150) -> list[Path]:
    """A campaign's figures (see testbed/campaign/figures.py) in each of `formats`; given a
    run's directory (run.json), its throughput over time with the timeline's changes."""
    from testbed.campaign.figures import FigureOptions, plot, plot_run

    opts = FigureOptions(tuple(formats), size, dpi)
    path = Path(results)
    return plot_run(path, opts) if (path / "run.json").exists() else plot(path, opts)


def build_image(recipe: str = "edge-node", force: bool = False, progress=lambda s: None) -> str:
    from testbed import images

    return images.build(recipe, force=force, progress=progress)


def images() -> list[dict]:
    """Every image recipe with the state of its image (ready, stale, missing), then images
    running testbeds use that no recipe here made (state 'foreign'), with who uses them."""
    from testbed import images as imgs

    used = imgs.in_use()
    out = [{"recipe": name, "state": imgs.image_state(name), "base": r.base_tag,
            "python": list(r.python), "dir": str(r.path.parent),
            "used_by": used.get(r.tag, []) + used.get(name, [])}
           for name, r in imgs.recipes().items()]
    known = {n for r in imgs.recipes().values() for n in (r.name, r.tag)}
    out += [{"recipe": image, "state": "foreign", "base": "-", "python": [], "dir": "-",
             "used_by": users} for image, users in sorted(used.items()) if image not in known]
    return out


def node_stats(name: str | None, node: str, interval_s: float, count: int):
    """A started sampler of a node's own statistics (a device's CPU, memory, tegrastats on
    the testbed's clock); the caller waits for `count` records and stops it."""
    ledger = resolve(name)
    sampler = nodes.of_node(ledger, node).collector(ledger, node, interval_s)
    if sampler is None:
        raise InputError(f"node {node} is not sampled on its own: its CPU and memory are in "
                         "nodes.csv of every run (only devices have a sampler)")
    sampler.max_samples = count
    return sampler.start()


def capture(name: str | None, a: str, b: str, side: str | None = None, count: int | None = None,
            write: str | Path | None = None, duration_s: float | None = None,
            bpf: list[str] | None = None) -> int:
    """tcpdump on link a-b (packets as text on stdout, or a pcap file with `write`); stops
    after `count` packets or `duration_s` seconds or Ctrl-C. Returns tcpdump's exit code."""
    import shutil
    import subprocess

    ifname = link_interface(name, a, b, side)
    if shutil.which("tcpdump") is None:
        raise InputError("tcpdump is not installed; run `make setup` (or apt install tcpdump)")
    ledger = resolve(name)
    ns = shards.port_namespaces(ledger.names, ledger.extra, ledger.topology["links"])[ifname]
    argv = [*(["ip", "netns", "exec", ns] if ns else []),  # its switch daemon's namespace
            "tcpdump", "-i", ifname, "-n", "-U", "--immediate-mode"]
    if count is not None:
        argv += ["-c", str(count)]
    if write is not None:
        argv += ["-w", str(write)]
    proc = subprocess.Popen([*argv, *(bpf or [])])
    try:
        return proc.wait(timeout=duration_s)
    except subprocess.TimeoutExpired:
        proc.terminate()  # tcpdump flushes the file and prints its counts on SIGTERM
        return 0 if proc.wait(timeout=10) in (0, -15) else proc.returncode
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=10)
        return 0
