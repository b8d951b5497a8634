"""Campaigns on a Ray cluster (`testbed campaign --cluster`): a real local Ray cluster made with
Ray's own testing utility (a head with no CPUs and two worker nodes, each advertising one
`testbed_host` and labelled w1/w2), the real `testbed` command as the driver."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from testbed import api, measure
from testbed.campaign.sweep import load_campaign
from testbed.experiment.processes import Processes
from testbed.lifecycle import load_topology
from testbed.net.ledger import Ledger, known_testbeds
from testbed.routing import FlowSpec
from testbed.sdn import FlowClient
from testbed.topology.model import Topology
from tests.conftest import (
    ROOT,
    TESTBED,
    assert_goodput,
    cli,
    needs_root,
    small_emulated_campaign,
    snapshot,
    wait_for,
)
from tests.test_campaign import campaign_file
from tests.test_hosts import SPLIT

# the split topology at 8 nodes: what goes through the hosts' Ray nodes is the same as at 20
# (tests/test_hosts.py), and each run measures every node's speed first (seconds per node)
SMALL_SPLIT = SPLIT.replace("nodes: 20", "nodes: 8")

pytestmark = [needs_root, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_cluster():
    from ray.cluster_utils import Cluster

    temp = tempfile.mkdtemp(prefix="tbray-")  # short: Ray's sockets live under it
    (Path(temp) / "ray").mkdir()
    before = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp  # Ray's files go there, the drivers' (children) too
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        for w in ("w1", "w2"):
            cluster.add_node(num_cpus=1, resources={"testbed_host": 1},
                             labels={"testbed-host": w})
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        if before is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = before


def _campaign(path: Path, address: str, *more: str) -> subprocess.Popen:
    return subprocess.Popen([*TESTBED, "campaign", str(path), "--out", str(path.parent / "r"),
                             "--cluster", address, *more], cwd=path.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_a_host_with_another_version_is_refused_naming_it(ray_cluster, tmp_path):
    cluster = ray_cluster
    other = tmp_path / "other"  # another checkout: the same package with one line changed
    shutil.copytree(ROOT / "testbed", other / "testbed",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "workloads", other / "workloads",
                    ignore=shutil.ignore_patterns("__pycache__"))
    with open(other / "testbed" / "units.py", "a") as f:
        f.write("\n# changed on this host\n")
    stranger = cluster.add_node(num_cpus=1, labels={"testbed-host": "w3"},
                                env_vars={"PYTHONPATH": str(other)})
    cluster.wait_for_nodes()
    try:
        path = campaign_file(tmp_path, "  scheduler: [otfa]", reps=1)
        res = _campaign(path, cluster.address)
        text = res.communicate(timeout=180)[0]
        assert res.returncode != 0, text
        assert "another version" in text and "w3" in text and "w1" not in text, text
        assert not (tmp_path / "r" / "c" / "trials.csv").exists()
    finally:
        cluster.remove_node(stranger)


def test_simulated_trials_spread_over_the_hosts_and_resume_after_the_driver_is_killed(
        ray_cluster, tmp_path):
    cluster = ray_cluster
    path = campaign_file(tmp_path, "  scheduler: [otfa, otfs, tp, lr, br]", reps=4)
    table = tmp_path / "r" / "c" / "trials.csv"
    total = len(load_campaign(path).trials)
    driver = _campaign(path, cluster.address)
    wait_for(lambda: table.exists() and len(pd.read_csv(table)) >= 2 or driver.poll() is not None,
             180, "two trials recorded")
    driver.send_signal(signal.SIGKILL)  # the driver only: the cluster stays
    driver.wait()
    partial = pd.read_csv(table)
    assert 2 <= len(partial) < total, partial  # noqa: SIM300
    again = _campaign(path, cluster.address, "--resume")
    text = again.communicate(timeout=300)[0]
    assert again.returncode == 0, text
    final = pd.read_csv(table)
    assert len(final) == total and final.trial.is_unique, final.trial.tolist()
    assert (final.status == "done").all(), final.reason.tolist()
    assert list(final.trial[:len(partial)]) == list(partial.trial)
    assert set(final.host) == {"w1", "w2"}  # spread over both hosts
    for t in final.trial:  # every trial's files came back to the driver
        assert (tmp_path / "r" / "c" / "trials" / t / "jobs.yaml").exists()


def _trial_workers(cluster, task: str = "_trial") -> list[int]:
    """Process ids of Ray workers running `task` in our cluster (children of its raylets)."""
    raylets = {p.process.pid for node in cluster.list_all_nodes()
               for p in node.all_processes.get("raylet", [])}
    out = subprocess.run(["ps", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines()[1:]:
        pid, ppid, args = line.split(None, 2)
        if int(ppid) in raylets and args.startswith(f"ray::{task}"):
            found.append(int(pid))
    return found


def test_emulated_trials_run_at_once_on_two_hosts_and_a_lost_worker_is_a_failed_row(
        ray_cluster, tmp_path):
    cluster = ray_cluster
    before = set(known_testbeds())
    path = small_emulated_campaign(tmp_path, "emu", ["otfa", "lr"])
    driver = _campaign(path, cluster.address)
    ours = lambda: set(known_testbeds()) - before  # noqa: E731
    wait_for(lambda: len(ours()) == 2 or driver.poll() is not None, 120,
             "both trials' testbeds up at once")
    assert len(ours()) == 2, driver.communicate()[0]
    wait_for(lambda: len(_trial_workers(cluster)) == 2, 30, "two trial workers")
    victim = _trial_workers(cluster)[0]
    time.sleep(2)  # mid-trial: testbed up, run started
    os.kill(victim, signal.SIGKILL)
    text = driver.communicate(timeout=300)[0]
    assert driver.returncode == 1, text  # a failed trial fails the command
    rows = pd.read_csv(tmp_path / "r" / "emu" / "trials.csv")
    assert sorted(rows.status) == ["done", "failed"], rows.reason.tolist()
    lost = rows[rows.status == "failed"].iloc[0]
    assert "Ray worker" in lost.reason
    assert rows[rows.status == "done"].iloc[0].host in ("w1", "w2")
    assert ours() == set(), "the lost trial's testbed was not removed"
    assert not (tmp_path / "r" / "emu" / "running.json").exists()
    assert not list(Path(tempfile.gettempdir()).glob(f"testbed-trial-{victim}-*")), \
        "the lost worker's scratch directory was left behind"


def test_host_pins_every_trial_to_the_labelled_host(ray_cluster, tmp_path):
    path = campaign_file(tmp_path, "  scheduler: [otfa, lr]", reps=2)
    path.write_text(path.read_text() + "host: w2\n")
    res = _campaign(path, ray_cluster.address)
    text = res.communicate(timeout=180)[0]
    assert res.returncode == 0, text
    rows = pd.read_csv(tmp_path / "r" / "c" / "trials.csv")
    assert len(rows) == 4 and set(rows.host) == {"w2"}, rows.host.tolist()
    path.write_text(path.read_text().replace("host: w2", "host: jetson-lab"))
    (tmp_path / "r").rename(tmp_path / "r-first")
    res = _campaign(path, ray_cluster.address)
    text = " ".join(res.communicate(timeout=180)[0].split())
    assert res.returncode == 2 and "testbed-host=jetson-lab" in text, text


def test_a_split_topology_is_built_and_removed_by_each_hosts_ray_node(
        ray_cluster, two_hosts, tmp_path):
    """`testbed up --cluster`: host w1's part is built by the Ray node labelled w1, w2's by
    w2's; `testbed down` has each of them remove its part; a host without a node is refused
    before anything is built."""
    text = SMALL_SPLIT.replace("  a: {", "  w1: {").replace("  b: {", "  w2: {")
    before = snapshot()
    missing = tmp_path / "w3.yaml"
    missing.write_text("name: tbt-raysplit\n" + text.replace("  w2: {", "  w3: {"))
    res = subprocess.run([*TESTBED, "up", str(missing), "--cluster", ray_cluster.address],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 2 and "hosts.w3: no node of the cluster is labelled " \
        "testbed-host=w3" in res.stderr, res.stderr
    assert snapshot() == before

    path = tmp_path / "split.yaml"
    path.write_text("name: tbt-raysplit\n" + text)
    try:
        res = subprocess.run([*TESTBED, "up", str(path), "--cluster", ray_cluster.address],
                             capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert res.returncode == 0, res.stdout + res.stderr
        ledger = Ledger.load("tbt-raysplit")
        parts = {p["host"]: p for p in ledger.extra["parts"]}
        assert {h: p["built_by"] for h, p in parts.items()} == {"w1": "w1", "w2": "w2"}
        assert parts["w1"]["ray_node"] != parts["w2"]["ray_node"]
        topo = Topology.from_dict(ledger.topology)
        assert {n.host for n in topo.nodes} == {"w1", "w2"} and topo.cut_links
        lk = topo.cut_links[0]  # shaping on cut links: tests/test_hosts.py; here per flow

        # the proof of reachability was run by the hosts, each from its own nodes, and
        # `check` does it again the same way
        fabric = ledger.extra["fabric"]
        assert fabric["pairs_proved"] >= len(topo.links) and fabric["rtt_one_hop_ms"] > 0
        res = cli("check", "--name", "tbt-raysplit")
        assert res.returncode == 0, res.stdout + res.stderr
        assert Ledger.load("tbt-raysplit").extra["fabric"]["pairs_proved"] == \
            fabric["pairs_proved"]

        # status and exec go through each host's Ray node (the host may be another machine);
        # the library's calls below share this process's one connection to the cluster
        st = api.status("tbt-raysplit")
        assert all(link["state"] == "up" for link in st["links"]), st["links"]
        assert all(info["present"] for info in st["nodes"].values())
        assert st["fabric"]["switch_daemons_cpu_s"] > 0  # read on the hosts, summed
        node = next(n.name for n in topo.nodes if n.host == "w2")
        res = cli("exec", node, "--name", "tbt-raysplit", "--", "sh", "-c",
                  "tr '\\0' ' ' < /proc/$PPID/cmdline; ip -o -4 addr show eth0; exit 7")
        assert res.returncode == 7, res.stderr
        assert res.stdout.startswith("ray::_call"), res.stdout  # run by the Ray task there
        assert topo.node(node).ip in res.stdout  # inside the node's namespace

        # a per-flow rate is set (and read back) at its source by that node's host
        src, dst = lk.b, lk.a  # over the cut link, from w2's side if the link's b is there
        client = FlowClient(ledger)
        flow = client.add([FlowSpec(src=src, dst=dst, path=(src, dst), dport=5304,
                                    rate_mbit=4)])[0]
        assert client.rate_classes(src) == {flow.id: 4_000_000}
        assert_goodput(ledger.name, src, dst, measure.ideal_goodput_mbit(4), 0.05, seconds=3,
                       port=5304)
        client.remove_all()
        assert client.rate_classes(src) == {}

        _processes_talk_through_the_hosts(ledger, topo, tmp_path)
        _a_killed_run_leaves_no_task_running(ledger, topo, tmp_path)

        # live changes act on each end's host: a cut link reshaped in place, a node stopped,
        # restarted and given a new CPU limit
        api.set_link("tbt-raysplit", lk.a, lk.b, bw=8)
        cut = next(x for x in api.links("tbt-raysplit")
                   if sorted(x["between"]) == sorted([lk.a, lk.b]))
        assert cut["state"] == "up" and [d["bw_mbit"] for d in cut["directions"]] == [8, 8]
        api.stop_node("tbt-raysplit", node)
        st = api.status("tbt-raysplit")
        assert st["nodes"][node]["stopped"] and any(
            link["state"] == "down" for link in st["links"] if node in link["between"])
        api.start_node("tbt-raysplit", node)
        api.set_node("tbt-raysplit", node, cpu=0.2)
        st = json.loads(cli("status", "--name", "tbt-raysplit", "--json").stdout)  # the CLI's
        assert all(link["state"] == "up" for link in st["links"]), st["links"]
        assert st["nodes"][node]["applied"]["cpu"] == 0.2, st["nodes"][node]
        res = cli("down", "--name", "tbt-raysplit")
        assert res.returncode == 0, res.stderr
        assert "host w1:" in res.stdout and "host w2:" in res.stdout, res.stdout
        assert not list(Path(tempfile.gettempdir()).glob("testbed-run-*"))  # swept by down
    finally:
        if "tbt-raysplit" in known_testbeds():
            cli("down", "--name", "tbt-raysplit")
        import ray

        ray.shutdown()  # iperf3's client ran through the host's Ray node, from this process
    assert snapshot() == before


def _tasks() -> dict[int, str]:
    """Running task processes of runs on cluster hosts (started with their configuration in a
    host's scratch directory, testbed-run-*) -> their parent's command, from /proc."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if not any(b"testbed-run-" in a for a in cmd):
                continue
            ppid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
            found[int(pid)] = Path(f"/proc/{ppid}/cmdline").read_bytes().split(b"\0")[0] \
                .decode()
        except OSError:
            continue
    return found


def _a_killed_run_leaves_no_task_running(ledger: Ledger, topo: Topology, tmp_path: Path,
                                         ) -> None:
    """SIGKILL `testbed run` mid-run: Ray ends the hosts' actors and the task processes die
    with them (their scratch directories go at the next run or at `down`)."""
    lk = topo.cut_links[0]
    (tmp_path / "long.yaml").write_text(
        f"jobs:\n  - name: long\n    source: {lk.a}\n    input: 20kB\n    duration: 60s\n"
        f"    tasks:\n      work: {{work: 0.002, memory: 64MB, node: {lk.b}}}\n")
    driver = subprocess.Popen([*TESTBED, "run", str(tmp_path / "long.yaml"), "--name",
                               ledger.name, "-s", "otfs", "--out", str(tmp_path / "killed")],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(_tasks()) == 2 or driver.poll() is not None, 120,
                 "the run's source and task")
        parents = set(_tasks().values())
        assert driver.poll() is None and parents and all(
            p.startswith("ray::HostProcesses") for p in parents), parents
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    wait_for(lambda: not _tasks(), 60, "the task processes to end with their driver")
    FlowClient(ledger).remove_all()  # the killed run's flows (the controller outlives it)


def _processes_talk_through_the_hosts(ledger: Ledger, topo: Topology, tmp_path: Path) -> None:
    """What the requests, video and training kinds do with their processes, on a node of host
    w2 from here: orders written to a process's stdin reach it, its events come back on its
    stdout as lines (here: a request client connecting across the cut link to an iperf3
    server that host w1's Ray node runs), and a question is answered on stdout when stdin
    closes (how kinds profile their nodes)."""
    lk = topo.cut_links[0]
    client, server = sorted([lk.a, lk.b], key=lambda n: topo.node(n).host, reverse=True)
    listening = threading.Thread(target=api.run_in_node, daemon=True, args=(
        ledger.name, server, ["iperf3", "-s", "-1", "-p", "7001", "--idle-timeout", "15"]),
        kwargs={"timeout": 30})
    listening.start()
    processes = Processes(ledger, tmp_path / "talk", "request_service.py", False)
    try:
        proc = processes.spawn(client, "client", {"role": "client", "max_bytes": 100},
                               talk=True)
        assert json.loads(proc.stdout.readline())["event"] == "ready"
        proc.stdin.write(json.dumps({"id": 7, "host": topo.node(server).ip, "port": 7001,
                                     "bytes": 100, "gops": 0.1}) + "\n")
        proc.stdin.flush()
        event = json.loads(proc.stdout.readline())
        assert event["event"] == "connected" and event["id"] == 7, event
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
        said = processes.answers({"ask": (client, {"role": "client", "max_bytes": 10})}, 60)
        assert said["ask"]["event"] == "ready", said
    finally:
        processes.finish()
    assert (tmp_path / "talk" / "logs" / "client.log").exists()
    listening.join(timeout=30)


def test_a_campaign_on_a_split_topology_runs_its_tasks_through_the_hosts(
        ray_cluster, two_hosts, edge_image, tmp_path):
    """`testbed campaign --cluster` on a topology split over hosts, a container among host
    w2's nodes: the trial runs from the driver with its topology built over the hosts, and
    every task process is started by its host's Ray actor (so the host may be another
    machine), the container's too; logs, traces and the nodes' CPU samples come back into
    the trial's directory, and nothing is left on either host."""
    text = SMALL_SPLIT.replace("  a: {", "  w1: {").replace("  b: {", "  w2: {") + (
        "nodes: {c1: {kind: docker, host: w2}}\nlinks: [{between: [n5, c1], bw: 20}]\n")
    (tmp_path / "split.yaml").write_text("name: tbt-peek\n" + text)
    topo = load_topology(tmp_path / "split.yaml", None)
    lk = next(x for x in topo.cut_links if "c1" not in (x.a, x.b))  # two host nodes
    src, far = sorted([lk.a, lk.b], key=lambda n: topo.node(n).host)  # on w1, on w2
    (tmp_path / "jobs.yaml").write_text(
        f"jobs:\n  - name: j\n    source: {src}\n    input: 20kB\n    duration: 5s\n"
        f"    tasks:\n      work: {{work: 0.002, memory: 64MB, node: {far}}}\n"
        "      box: {work: 0.002, memory: 64MB, node: c1, after: {work: 10kB}}\n")
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump({
        "name": "splitc", "mode": "emulated", "topology": yaml.safe_load(text),
        "jobs": "jobs.yaml", "grid": {"scheduler": ["otfs"]}, "repetitions": 1}))
    before = snapshot()
    parents: set[str] = set()
    driver = _campaign(path, ray_cluster.address)
    try:
        wait_for(lambda: parents.update(_tasks().values()) or parents or
                 driver.poll() is not None, 180, "the task processes")
        said = driver.communicate(timeout=300)[0]
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 0, said
    assert parents and all(p.startswith("ray::HostProcesses") for p in parents), parents
    (row,) = pd.read_csv(tmp_path / "r" / "splitc" / "trials.csv").itertuples()
    assert row.status == "done" and row.jobs_done == 1, row
    run = next((tmp_path / "r" / "splitc" / "trials").iterdir()) / "run"
    (job,) = pd.read_csv(run / "jobs.csv").itertuples()
    assert job.items_done > 10 and f"work@{far}" in job.placement \
        and "box@c1" in job.placement, job
    assert 0.85 < job.fidelity < 1.15, job  # measured vs predicted, across the cut link
    assert {p.name for p in (run / "traces").glob("*.csv")} >= {
        "j.source.csv", "j.work.csv", "j.box.csv"}  # the container's from its shared dir
    assert (run / "logs" / "j.work.log").exists() and (run / "logs" / "j.box.log").exists()
    usage = pd.read_csv(run / "nodes.csv").groupby("node").cpu_s.max()
    assert usage[far] > 0.05 and usage["c1"] > 0.05 and len(usage) == 9, usage  # on the hosts
    assert not list(Path(tempfile.gettempdir()).glob("testbed-run-*"))  # the hosts' scratch
    assert snapshot() == before


def test_down_removes_a_split_topology_whose_driver_was_killed_mid_build(
        ray_cluster, two_hosts, tmp_path):
    """SIGKILL `testbed up --cluster` while the hosts build their parts: `testbed down` asks
    both hosts to remove theirs (the state file named the cluster first) and nothing stays."""
    text = SPLIT.replace("  a: {", "  w1: {").replace("  b: {", "  w2: {")
    before = snapshot()
    path = tmp_path / "split.yaml"
    path.write_text("name: tbt-raykill\n" + text)
    driver = subprocess.Popen([*TESTBED, "up", str(path), "--cluster", ray_cluster.address],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        wait_for(lambda: _trial_workers(ray_cluster, "_build") or driver.poll() is not None,
                 120, "the hosts building their parts")
        assert driver.poll() is None, driver.communicate()[0]
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        wait_for(lambda: not _trial_workers(ray_cluster, "_build"), 120,
                 "the builds to end with their driver")
        assert "tbt-raykill" in known_testbeds()
        res = cli("down", "--name", "tbt-raykill")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "host w1:" in res.stdout and "host w2:" in res.stdout, res.stdout
    finally:
        if driver.poll() is None:
            driver.kill()
        if "tbt-raykill" in known_testbeds():
            cli("down", "--name", "tbt-raykill")
    assert snapshot() == before
