"""Shared fixtures: real testbeds brought up and always torn down, and leftover snapshots."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed import api
from testbed.naming import CGROUP_ROOT, CONTAINER_LABEL, NETNS_DIR
from testbed.net import ovs
from testbed.net.ledger import known_testbeds

ROOT = Path(__file__).resolve().parent.parent
TESTBED = [sys.executable, "-m", "testbed"]
TEST_PREFIX = "tbt-"


def cli(*args: str, timeout: float = 300, check: bool = False) -> subprocess.CompletedProcess:
    """Run the real `testbed` command."""
    res = subprocess.run([*TESTBED, *args], capture_output=True, text=True, timeout=timeout,
                         cwd=ROOT)
    if check and res.returncode != 0:
        raise AssertionError(f"testbed {' '.join(args)} failed: {res.stdout}{res.stderr}")
    return res


_BATCH = """
import contextlib, io, json, sys, traceback
from testbed.cli import main
done = []
for argv in json.load(sys.stdin):
    out, err, code = io.StringIO(), io.StringIO(), 0
    sys.argv = ["testbed", *argv]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
        except BaseException:
            traceback.print_exc()
            code = 1
    done.append([code, out.getvalue(), err.getvalue()])
json.dump(done, sys.__stdout__)
"""


def cli_batch(*argvs: list[str], timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Run several `testbed` commands in one fresh process, one after the other, each
    through the CLI's own entry point (exit code, stdout and stderr as the command gives
    them): for tests of many inputs that each fail before anything is built, without paying
    the interpreter's start-up for every one."""
    import json

    res = subprocess.run([sys.executable, "-c", _BATCH], input=json.dumps(argvs),
                         capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if res.returncode != 0:
        raise AssertionError(f"the batch of commands crashed: {res.stderr[-3000:]}")
    return [subprocess.CompletedProcess(["testbed", *a], code, out, err)
            for a, (code, out, err) in zip(argvs, json.loads(res.stdout), strict=True)]


def wait_for(cond, timeout_s: float, what: str) -> None:
    """Poll `cond` until it holds (tests wait on conditions, not on guessed durations)."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.05)


def assert_goodput(name: str, src: str, dst: str, ideal: float, tol: float, *,
                   seconds: float, omit: float = 1, port: int = 5201, attempts: int = 3,
                   starved: float = 0.1) -> float:
    """Assert iperf3 goodput src->dst is within `tol` of `ideal`; returns it. A miss measured
    while the hypervisor stole more than `starved` of this VM's CPU is measured again (up to
    `attempts` in all): the forwarding processes were starved, not the shaper wrong. A miss
    with the CPU ours fails at once."""
    from testbed import measure

    for _ in range(attempts):
        with measure.cpu_steal() as steal:
            got = measure.iperf3(name, src, dst, seconds=seconds, omit=omit, port=port)
        if abs(got - ideal) / ideal < tol:
            return got
        if steal.share < starved:
            break
    raise AssertionError(f"{src}->{dst}: {got:.3f} Mbit/s, not within {tol:.0%} of "
                         f"{ideal:.3f} (the hypervisor took {steal.share:.0%} of the CPU)")


def small_emulated_campaign(tmp_path: Path, name: str, schedulers: list[str],
                            duration_s: int = 6) -> Path:
    """A campaign of one short job on a 4-node mesh, one trial per scheduler, emulated."""
    (tmp_path / "jobs.yaml").write_text(
        f"jobs:\n  - {{name: chain, source: n1, input: 20kB, duration: {duration_s}s,\n"
        "     tasks: {t: {work: 0.01, memory: 64MB, node: n3}}}\n")
    path = tmp_path / "campaign.yaml"
    path.write_text(
        f"name: {name}\nmode: emulated\ntopology: {{defaults: {{node: {{cpu: 0.3}}}}, "
        "generate: {random_mesh: {nodes: 4, degree: 2, bw_mean: 2}}}\njobs: jobs.yaml\n"
        f"grid: {{scheduler: [{', '.join(schedulers)}]}}\nrepetitions: 1\n")
    return path


def write_topology(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\n{text}")
    return path


def snapshot() -> dict:
    """What exists on this host that a testbed could make (compared before/after)."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    boxes = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={CONTAINER_LABEL}"],
                           capture_output=True, text=True).stdout
    procs = subprocess.run(["ps", "-eo", "pid,stat,args"], capture_output=True, text=True).stdout
    return {
        "netns": sorted(os.listdir(NETNS_DIR)) if NETNS_DIR.exists() else [],
        # ovs-netdev is OVS's own device for its userspace datapath: it exists while any
        # netdev bridge does (anyone's) and goes a moment after the last one is deleted
        "links": sorted(name for line in links.splitlines()
                        if (name := line.split(":")[1].strip().split("@")[0]) != "ovs-netdev"),
        "bridges": sorted(ovs.list_bridges()) if ovs.running() else [],
        "cgroups": sorted(str(p) for p in CGROUP_ROOT.glob("*/testbed/**") if p.is_dir()),
        "containers": sorted(boxes.split()),
        "controllers": sorted(line.split()[0] for line in procs.splitlines()
                              if "controllers.run" in line and " Z" not in line),
        "relays": sorted(line.split()[0] for line in procs.splitlines()  # split topologies'
                         if "testbed.net.ofrelay" in line and " Z" not in line),
        "state": known_testbeds(),
    }


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="emulation needs root")


@pytest.fixture
def bring_up(tmp_path):
    """Factory: bring a topology (YAML text) up under a test name; torn down after the test."""
    made: list[str] = []

    def _up(name: str, text: str):
        name = TEST_PREFIX + name
        path = write_topology(tmp_path, name, text)
        made.append(name)
        return api.up(path)

    yield _up
    for name in made:
        api.down(name)


@pytest.fixture
def two_hosts():
    """Two namespaces playing two hosts (tests/fakehosts.py), joined by a veth pair with a
    1,500-byte MTU (the tunnels' outer packets are fragmented, the harder case)."""
    from tests.fakehosts import FakeHosts

    hosts = FakeHosts("tbt", "10.250.7").start()
    try:
        yield hosts
    finally:
        hosts.close()


@pytest.fixture(scope="session")
def edge_image() -> str:
    """The edge-node image, built from images/edge-node if missing or stale (minutes once)."""
    from testbed import images

    return images.build("edge-node")


@pytest.fixture(scope="session", autouse=True)
def no_leftovers_from_earlier_runs():
    """Remove test testbeds an interrupted earlier run left behind (only ours, by prefix),
    unless another test session is running now (it holds the lock): its testbeds are live."""
    import fcntl

    with open("/tmp/edge-testbed-tests.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except OSError:
            alone = False
        if alone:
            for name in known_testbeds():
                if name.startswith(TEST_PREFIX):
                    api.down(name, force=True)
        yield
