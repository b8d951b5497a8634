"""up / status / exec / down through the real CLI on a 5-node mesh, and cleanup after SIGKILL."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, TESTBED, cli, needs_root, snapshot, wait_for, write_topology

pytestmark = [needs_root, pytest.mark.emulation]

MESH5 = """
defaults:
  link: {bw: 10}
nodes:
  a: {cpu: 0.5}
  b: {profile: jetson-nano}
  c: {memory: 256}
  d: {}
  e: {}
links:
  - {between: [a, b], bw: 2}
  - {between: [b, c]}
  - {between: [c, d], bw: "5Mbit"}
  - {between: [d, e]}
  - {between: [e, a]}
  - {between: [a, c], bw: 8}
  - {between: [b, d]}
"""


def test_up_status_exec_down(tmp_path):
    name = "tbt-life"
    path = write_topology(tmp_path, name, MESH5)
    before = snapshot()
    try:
        res = cli("up", str(path), check=True)
        assert f"testbed {name} is up" in res.stdout
        st = json.loads(cli("status", "--name", name, "--json", check=True).stdout)
        assert st["name"] == name
        assert st["nodes"]["a"] == {**st["nodes"]["a"], "ip": "10.0.0.1", "kind": "host"}
        assert {tuple(lk["between"]): lk["bw_mbit"] for lk in st["links"]}[("a", "b")] == 2.0
        assert st["controller"]["running"] and st["controller"]["switches_ready"] == 5
        # exec streams output and passes the exit code through
        res = cli("exec", "e", "--name", name, "--", "ping", "-c", "1", "-W", "2", "10.0.0.3")
        assert res.returncode == 0 and "1 received" in res.stdout
        assert cli("exec", "e", "--name", name, "--", "sh", "-c", "exit 3").returncode == 3
        res = cli("exec", "a", "--name", name, "--", "ip", "-4", "-o", "addr", "show", "eth0")
        assert "10.0.0.1/16" in res.stdout
        # the node's process runs in its CPU cgroup with the configured quota
        res = cli("exec", "a", "--name", name, "--", "cat", "/proc/self/cgroup")
        assert f"cpu:/testbed/{name}/a" in res.stdout
        with open(f"/sys/fs/cgroup/cpu/testbed/{name}/a/cpu.cfs_quota_us") as f:
            assert int(f.read()) == 5_000  # of 10 ms: cgroups.cpu_limits
        # every pair pings (meshes with cycles work)
        nodes = st["nodes"]
        for src in nodes:
            ips = [nodes[d]["ip"] for d in nodes if d != src]
            script = " && ".join(f"ping -c 1 -W 2 {ip} >/dev/null" for ip in ips)
            assert cli("exec", src, "--name", name, "--", "sh", "-c", script).returncode == 0
        assert cli("exec", "zz", "--name", name, "--", "true").returncode == 2
    finally:
        res = cli("down", "--name", name)
    assert res.returncode == 0, res.stderr
    assert snapshot() == before


def test_status_when_nothing_is_up():
    res = cli("status", "--name", "tbt-nothing")
    assert res.returncode == 1 and "no testbed named 'tbt-nothing' is up" in res.stderr


def test_second_up_of_the_same_name_is_refused(bring_up, tmp_path):
    bring_up("twice", "nodes: {a: {}, b: {}}\nlinks: [{between: [a, b]}]")
    text = "nodes: {a: {}, b: {}}\nlinks: [{between: [a, b]}]"
    path = write_topology(tmp_path, "tbt-twice", text)
    res = cli("up", str(path))
    assert res.returncode == 2 and "already up" in res.stderr


def _start_up(path) -> subprocess.Popen:
    return subprocess.Popen([*TESTBED, "up", str(path)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


@pytest.mark.slow
@pytest.mark.parametrize("delay_s", [0.05, 0.3, 0.6, 0.9, 1.3, None])
def test_down_after_sigkill_at_any_moment_of_up(tmp_path, delay_s):
    """Kill `testbed up` (and then its controller) with SIGKILL mid-way; down leaves nothing."""
    name = "tbt-kill"
    text = "generate: {random_mesh: {nodes: 12, degree: 3, bw_mean: 10, seed: 1}}"
    path = write_topology(tmp_path, name, text)
    before = snapshot()
    proc = _start_up(path)
    if delay_s is None:
        proc.wait(timeout=120)  # fully up: kill the background controller instead
    else:
        time.sleep(delay_s + random.uniform(0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    from testbed.net.ledger import Ledger

    ledger = Ledger.load(name)
    if ledger and ledger.controller and ledger.controller.alive():
        os.kill(ledger.controller.pid, signal.SIGKILL)
    res = cli("down", "--name", name)
    assert res.returncode == 0, res.stderr
    assert snapshot() == before


def test_down_stops_a_controller_whose_pid_was_never_recorded(tmp_path):
    """`up` killed between spawning the controller and saving its pid: down still finds it."""
    from testbed.net.ledger import Ledger

    name = "tbt-orphan"
    path = write_topology(tmp_path, name, "nodes: {a: {}, b: {}}\nlinks: [{between: [a, b]}]")
    before = snapshot()
    try:
        cli("up", str(path), check=True)
        ledger = Ledger.load(name)
        pid = ledger.controller.pid
        ledger.controller = None
        ledger.save()
    finally:
        res = cli("down", "--name", name)
    assert res.returncode == 0, res.stderr
    assert f"controller: pid {pid}" in res.stdout
    assert snapshot() == before


def test_controller_death_is_reported_and_up_restarts_it(bring_up, tmp_path):
    from testbed import api
    from testbed.routing import FlowSpec
    from testbed.sdn import FlowClient

    ledger = bring_up("ctl", "nodes: {a: {}, b: {}, c: {}}\n"
                             "links: [{between: [a, b]}, {between: [b, c]}, {between: [a, c]}]")
    FlowClient(ledger).add([FlowSpec(src="a", dst="c", path=("a", "b", "c"), dport=5001)])
    os.kill(ledger.controller.pid, signal.SIGKILL)
    wait_for(lambda: not ledger.controller.alive(), 10, "the controller to die")
    res = cli("status", "--name", ledger.name)
    assert "NOT RUNNING" in res.stdout
    path = write_topology(tmp_path, ledger.name, "nodes: {a: {}, b: {}, c: {}}\n"
                          "links: [{between: [a, b]}, {between: [b, c]}, {between: [a, c]}]")
    assert cli("up", str(path)).returncode == 0
    st = api.status(ledger.name)
    assert st["controller"]["running"] and st["controller"]["flows"] == 1
    flows = FlowClient(api.resolve(ledger.name)).list()
    assert flows[0]["path"] == ["a", "b", "c"]


def test_cli_help_everywhere():
    for args in ([], ["up"], ["flow"], ["flow", "add"], ["down"], ["exec"]):
        res = subprocess.run([sys.executable, "-m", "testbed", *args, "--help"], cwd=ROOT,
                             capture_output=True, text=True)
        assert res.returncode == 0 and "Usage" in res.stdout
