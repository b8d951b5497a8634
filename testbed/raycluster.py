"""Joining a Ray cluster and checking its hosts: what campaigns on a cluster
(testbed/campaign/cluster.py) and topologies split over hosts (testbed/hosted.py) share.
Hosts are found by resource (`testbed_host`, one per emulation host) or by label
(`testbed-host=<name>`), and every host must run the driver's version of the project."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import socket
import tempfile
import time
from importlib import metadata
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import testbed
from testbed.errors import InputError
from testbed.procs import process_start_ticks

RESOURCE = "testbed_host"  # one per emulation host: `ray start ... --resources`
LABEL = "testbed-host"  # a host's name (`host:` in campaigns, `hosts:`): `ray start --labels`
DIST = "edge-testbed"
RUN_SCRATCH = "testbed-run-"  # + a run's host actor pid: its processes' files on that host


def fingerprint() -> str:
    """This machine's project: the package's and workloads' source, and the installed version
    of every pinned dependency. Two hosts with equal fingerprints run a trial the same way."""
    h = hashlib.sha256()
    pkg = Path(testbed.__file__).resolve().parent
    for root in (pkg, pkg.parent / "workloads"):
        for f in sorted(root.rglob("*.py")) if root.is_dir() else []:
            h.update(str(f.relative_to(pkg.parent)).encode() + b"\0" + f.read_bytes())
    try:
        for req in sorted(metadata.requires(DIST) or []):
            name = req.split(";")[0].split("==")[0].split("[")[0].strip()
            with contextlib.suppress(metadata.PackageNotFoundError):
                h.update(f"{name}=={metadata.version(name)}".encode())
    except metadata.PackageNotFoundError:
        h.update(b"not installed")
    return h.hexdigest()[:16]


def host_name() -> str:
    """The name rows record: the host's `testbed-host` label, else its hostname."""
    labels = ray.get_runtime_context().get_node_labels() if ray.is_initialized() else {}
    return labels.get(LABEL) or socket.gethostname()


@ray.remote(num_cpus=0, max_retries=0)
def _identity() -> tuple[str, str]:
    return host_name(), fingerprint()


def connect(address: str) -> None:
    """Join the cluster at `address` (`auto`: the one started on this machine)."""
    if ray.is_initialized():
        return
    try:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR",
                 configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise InputError(f"--cluster {address}: no Ray cluster answers there ({e}). Start one "
                         "with `ray start --head` and pass its address (HEAD:6379), or `auto` "
                         "on the head itself") from None


def alive() -> list[dict]:
    return [n for n in ray.nodes() if n.get("Alive")]


def on(node: dict) -> NodeAffinitySchedulingStrategy:
    return NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)


@ray.remote(num_cpus=0, max_retries=0)
def _call(fn, args: tuple):
    return fn(*args)


def call_on_host(address: str, host: str, fn, *args):
    """fn(*args) run by the Ray node labelled `testbed-host=<host>` (fn importable there, e.g.
    a node kind's method: what must act on that host's kernel); its result, or its error."""
    connect(address)
    node = next((n for n in alive() if n.get("Labels", {}).get(LABEL) == host), None)
    if node is None:
        from testbed.errors import NetworkError

        raise NetworkError(f"host {host} has no live Ray node labelled {LABEL}={host}")
    try:
        return ray.get(_call.options(scheduling_strategy=on(node)).remote(fn, args))
    except ray.exceptions.RayTaskError as e:
        raise e.as_instanceof_cause() from None


def sweep_scratch(prefix: str) -> None:
    """Remove this host's scratch directories `<prefix><worker pid>-...` whose Ray worker is
    gone (killed before it could clean up: a lost trial, a run whose driver died)."""
    for d in Path(tempfile.gettempdir()).glob(f"{prefix}*-*"):
        pid = d.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and process_start_ticks(int(pid)) is None:
            for _ in range(10):  # a run's processes still being stopped may write as it goes
                shutil.rmtree(d, ignore_errors=True)
                if not d.exists():
                    break
                time.sleep(0.5)


def check_hosts(mode: str, host: str | None) -> None:
    """Refuse a cluster with a host that runs another version of the project, or none that
    can run these trials."""
    mine = fingerprint()
    nodes = alive()
    refs = [_identity.options(scheduling_strategy=on(n)).remote() for n in nodes]
    bad = []
    for node, ref in zip(nodes, refs, strict=True):
        where = node.get("NodeManagerAddress", "?")
        try:
            name, theirs = ray.get(ref, timeout=120)
        except Exception as e:  # noqa: BLE001 - a host that cannot even import us
            bad.append(f"{where} (cannot run the testbed: {type(e).__name__})")
            continue
        if theirs != mine:
            bad.append(f"{name} at {where} (version {theirs}, here {mine})")
    if bad:
        raise InputError("hosts running another version of the testbed: " + "; ".join(bad)
                         + ". Bring each to the driver's commit (git pull && make setup) and "
                         "restart its Ray node, or stop it")
    usable = [n for n in nodes if (mode != "emulated" or n["Resources"].get(RESOURCE))
              and (host is None or n.get("Labels", {}).get(LABEL) == host)]
    if not usable:
        need = [f"the resource {RESOURCE}"] if mode == "emulated" else []
        need += [f"the label {LABEL}={host}"] if host else []
        raise InputError(
            f"no node of the cluster has {' and '.join(need) or 'room'}: start one as root "
            f"with `ray start --address HEAD:6379 --resources '{{\"{RESOURCE}\": 1}}'"
            + (f" --labels {LABEL}={host}" if host else "") + "`")


