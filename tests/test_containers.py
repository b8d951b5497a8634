"""Docker container nodes beside host nodes: same links, shaping, routing and exec; real CPU and
memory limits; changed at run time; removed exactly, also after SIGKILL."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from testbed import api, measure
from testbed.naming import CONTAINER_LABEL
from tests.conftest import ROOT, TESTBED, assert_goodput, cli, needs_root, snapshot, write_topology

pytestmark = [needs_root, pytest.mark.emulation]

MIXED = """
nodes:
  h1: {}
  h2: {}
  c1: {kind: docker, image: edge-node, cpu: 1, memory: 512}
  c2: {kind: docker, cpu: 0.5, memory: 128}
links:
  - {between: [h1, c1], bw: 10}
  - {between: [c1, c2], bw: 5}
  - {between: [c2, h2], bw: 10}
  - {between: [h1, h2], bw: 20}
"""

# CPU seconds per wall second of a busy loop: a CFS quota caps it however loaded the host is
SPIN = ("import time\nt0, c0 = time.monotonic(), time.process_time()\n"
        "while time.monotonic() < t0 + 3:\n    pass\n"
        "print((time.process_time() - c0) / (time.monotonic() - t0))")


@pytest.fixture
def mixed(bring_up, edge_image):
    return bring_up("mix", MIXED)


@pytest.mark.slow
def test_mixed_topology_goodput_exec_limits_and_runtime_changes(mixed):
    name = mixed.name
    st = api.status(name)
    assert {n: i["kind"] for n, i in st["nodes"].items()} == {
        "h1": "host", "h2": "host", "c1": "docker", "c2": "docker"}
    assert all(st["nodes"][c]["container"]["status"] == "running" for c in ("c1", "c2"))

    # shaped links carry the same goodput to and from containers as between hosts
    ideal10, ideal5 = measure.ideal_goodput_mbit(10), measure.ideal_goodput_mbit(5)
    for src, dst, ideal in [("h1", "c1", ideal10), ("c1", "h1", ideal10), ("c2", "c1", ideal5)]:
        assert_goodput(name, src, dst, ideal, 0.03, seconds=6)

    # a per-flow path and rate from a container (HTB class at its eth0, like a host node)
    from testbed.routing import FlowSpec
    from testbed.sdn import FlowClient

    client = FlowClient(mixed)
    client.add([FlowSpec(src="c1", dst="h2", path=("c1", "h1", "h2"), dport=5302,
                         rate_mbit=3.0)])
    assert_goodput(name, "c1", "h2", measure.ideal_goodput_mbit(3), 0.05, seconds=5,
                   port=5302)
    client.remove_all()

    # exec runs in the container: its hostname, its image's Python and torch, its namespace
    res = cli("exec", "c1", "--name", name, "--", "sh", "-c", "hostname; ip -o -4 addr show "
              "eth0; python3 -c 'import torch; print(torch.__version__)'")
    assert res.returncode == 0, res.stderr
    host, addr, torch_version = res.stdout.split("\n")[:3]
    assert host == "c1" and st["nodes"]["c1"]["ip"] + "/16" in addr
    assert torch_version.startswith("2.13.0")
    assert cli("exec", "c1", "--name", name, "--", "sh", "-c", "exit 7").returncode == 7

    # CPU limits: a busy loop in a 0.5-core node gets at most half a CPU second per second.
    # The share is measured rather than loop counts compared between nodes: on 2 cores the
    # controller, OVS and other tests take turns with the loops (count ratios of 0.8 and 1.54
    # were seen in full-suite runs where 1.0 was due), but no load lifts a quota.
    def share(node: str) -> float:
        return float(api.run_in_node(name, node, ["python3", "-c", SPIN], timeout=60).stdout)

    half = share("c2")
    assert half < 0.56, half

    # memory limit: the kernel kills a process that outgrows its node, status reports it
    hog = ["python3", "-c", "b = bytearray(300 * 2**20); print('survived')"]
    res = api.run_in_node(name, "c2", hog, timeout=60)
    assert res.returncode == -signal.SIGKILL and "survived" not in res.stdout
    assert api.status(name)["nodes"]["c2"]["oom_kills"] >= 1
    table = cli("status", "--name", name).stdout
    row = next(line for line in table.splitlines() if " c2 " in line)
    cells = [c.strip() for c in row.split("│") if c.strip()]
    assert cells[0] == "c2" and int(cells[5]) >= 1, row  # the "oom kills" column

    # runtime changes: more memory and CPU for c2, seen by the kernel, Docker and status
    res = cli("node", "set", "c2", "--name", name, "--cpu", "1", "--memory", "512MB")
    assert res.returncode == 0, res.stderr
    assert api.run_in_node(name, "c2", hog, timeout=60).stdout.strip() == "survived"
    whole = share("c2")
    assert whole > 0.6 and whole > 1.2 * half, (half, whole)
    inspect = json.loads(subprocess.run(["docker", "inspect", f"tb-{name}.c2"],
                                        capture_output=True, text=True).stdout)[0]["HostConfig"]
    assert inspect["CpuQuota"] == 10_000 and inspect["CpuPeriod"] == 10_000
    assert inspect["Memory"] == 512 * 10**6
    assert api.status(name)["nodes"]["c2"]["cpu"] == 1
    bad = cli("node", "set", "c2", "--name", name, "--memory", "10MB")
    assert bad.returncode == 2 and "at least 64 MB" in bad.stderr


@pytest.mark.slow
def test_a_run_places_tasks_in_containers(mixed, tmp_path):
    """The runner starts task processes inside containers (the image's Python and workloads)
    and gets their traces back."""
    (tmp_path / "jobs.yaml").write_text(
        "jobs:\n  - name: j\n    source: h1\n    input: 20kB\n    duration: 8s\n"
        "    tasks:\n      work: {work: 0.002, memory: 64MB, node: c1}\n")
    res = cli("run", str(tmp_path / "jobs.yaml"), "--name", mixed.name, "--scheduler", "otfs",
              "--out", str(tmp_path / "run"))
    assert res.returncode == 0, res.stdout + res.stderr
    import pandas as pd

    (job,) = pd.read_csv(tmp_path / "run" / "jobs.csv").itertuples()
    assert job.status == "done" and job.items_done > 20 and job.placement == "work@c1", job
    assert 0.9 < job.fidelity < 1.1, job  # measured vs predicted throughput
    usage = pd.read_csv(tmp_path / "run" / "nodes.csv").groupby("node").cpu_s.max()
    assert usage["c1"] > 0.1, usage  # the container's cgroup did the work
    assert not list(api.resolve(mixed.name).names.share_dir("c1").glob("*.csv"))


@pytest.mark.slow
@pytest.mark.parametrize("delay_s", [0.8, 2.0, None])
def test_down_after_sigkill_removes_exactly_our_containers(tmp_path, edge_image, delay_s):
    name = "tbt-ckill"
    bystander = subprocess.run(  # a container of someone else, with a similar name
        ["docker", "run", "-d", "--rm", "--network", "none", "--name", "tbt-ckill-bystander",
         "--label", f"{CONTAINER_LABEL}=another", edge_image], capture_output=True, text=True)
    assert bystander.returncode == 0, bystander.stderr
    try:
        path = write_topology(tmp_path, name, "nodes: {a: {}, c1: {kind: docker}, "
                              "c2: {kind: docker}, c3: {kind: docker}}\n"
                              "links: [{between: [a, c1]}, {between: [a, c2]}, "
                              "{between: [c2, c3]}]")
        before = snapshot()
        proc = subprocess.Popen([*TESTBED, "up", str(path)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if delay_s is None:
            assert proc.wait(timeout=120) == 0
        else:
            time.sleep(delay_s)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        ledger = api.resolve(name) if name in api.known_testbeds() else None
        if ledger and ledger.controller and ledger.controller.alive():
            import os

            os.kill(ledger.controller.pid, signal.SIGKILL)
        res = cli("down", "--name", name)
        assert res.returncode == 0, res.stderr
        assert snapshot() == before
        alive = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}",
                                "tbt-ckill-bystander"], capture_output=True, text=True)
        assert alive.stdout.strip() == "true"
    finally:
        subprocess.run(["docker", "rm", "-f", "tbt-ckill-bystander"], capture_output=True)


def test_bad_container_input_fails_before_building(tmp_path, edge_image):
    before = snapshot()
    cases = {
        "nodes: {a: {}, c: {kind: docker, image: no-such-image}}\n"
        "links: [{between: [a, c]}]": ("nodes.c.image", "no-such-image"),
        "nodes: {a: {}, c: {kind: docker, cpu: 64}}\nlinks: [{between: [a, c]}]":
            ("nodes.c.cpu", "more than this host has"),
        "nodes: {a: {}, c: {kind: docker, memory: 32MB}}\nlinks: [{between: [a, c]}]":
            ("nodes.c.memory", "at least 64 MB"),
        "nodes: {a: {image: edge-node}, c: {}}\nlinks: [{between: [a, c]}]":
            ("nodes.a.image", "kind: docker"),
    }
    for text, (field, words) in cases.items():
        path = write_topology(tmp_path, "tbt-badc", text)
        res = cli("up", str(path))
        assert res.returncode == 2, (text, res.stdout, res.stderr)
        assert str(path) in res.stderr and field in res.stderr and words in res.stderr, res.stderr
    assert snapshot() == before


def test_docker_node_without_an_engine_is_refused_clearly(tmp_path):
    path = write_topology(tmp_path, "tbt-noengine", "nodes: {a: {}, c: {kind: docker}}\n"
                                                    "links: [{between: [a, c]}]")
    before = snapshot()
    res = subprocess.run([*TESTBED, "up", str(path)], capture_output=True, text=True, cwd=ROOT,
                         env={**__import__("os").environ,
                              "DOCKER_HOST": "unix:///run/testbed-no-engine.sock"})
    assert res.returncode == 2 and "no Docker engine" in res.stderr and "make setup" in res.stderr
    assert snapshot() == before


def test_a_missing_image_names_the_command_that_builds_it(tmp_path, monkeypatch, edge_image):
    from testbed import images
    from testbed.errors import InputError
    from testbed.nodes.docker import check_images
    from testbed.topology import load

    recipe = tmp_path / "images" / "tiny"
    recipe.mkdir(parents=True)
    (recipe / "recipe.yaml").write_text("base: {packages: [python3]}\n")
    monkeypatch.setattr(images, "RECIPES", tmp_path / "images")
    path = write_topology(tmp_path, "tbt-tiny", "nodes: {a: {}, c: {kind: docker, image: tiny}}\n"
                                                "links: [{between: [a, c]}]")
    with pytest.raises(InputError, match=r"nodes.c.image: tiny is not built; fix: run "
                                         r"`testbed image build tiny`"):
        check_images(load(path))
