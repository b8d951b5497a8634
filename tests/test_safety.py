"""Safety on shared hosts and under faults: exact ownership at cleanup, names that cannot escape,
a controller only root can reach, runs that survive their controller, links downed behind the
testbed's back, unprivileged commands, a probe that leaves nothing."""

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from testbed import api
from testbed.net.ledger import Ledger
from testbed.routing import FlowSpec
from testbed.sdn import FlowClient
from tests.conftest import (
    ROOT,
    TESTBED,
    cli,
    needs_root,
    small_emulated_campaign,
    snapshot,
    wait_for,
    write_topology,
)

pytestmark = [needs_root, pytest.mark.emulation]

TRIANGLE = ("nodes: {a: {}, b: {}, c: {}}\n"
            "links: [{between: [a, b]}, {between: [b, c]}, {between: [a, c]}]")
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3"]


def test_down_of_a_name_never_touches_a_longer_or_overlapping_name(bring_up):
    """`down --name tbt-lab` with `tbt-lab-b` up beside it; and namespace names that used to
    collide (testbed tbt-lab, node b-e1 vs testbed tbt-lab-b, node e1) stay apart."""
    other = bring_up("lab-b", "nodes: {e1: {}, e2: {}}\nlinks: [{between: [e1, e2]}]")
    bring_up("lab", "nodes: {b-e1: {}, x: {}}\nlinks: [{between: [b-e1, x]}]")
    assert other.names.netns("e1") != Ledger.load("tbt-lab").names.netns("b-e1")
    listed = {t["name"]: t for t in json.loads(cli("ls", "--json", check=True).stdout)}
    assert {"tbt-lab", "tbt-lab-b"} <= set(listed)  # `ls` shows both, each as it is
    assert listed["tbt-lab-b"]["nodes"] == 2 and listed["tbt-lab-b"]["links"] == 1
    assert listed["tbt-lab"]["phase"] == "up" and listed["tbt-lab"]["controller_running"]
    res = cli("down", "--name", "tbt-lab")
    assert res.returncode == 0, res.stderr
    res = cli("down", "--name", "tbt-la")  # a prefix of both: nothing of either is touched
    assert res.returncode == 0 and "nothing to remove" in res.stdout, res.stdout
    left = [t["name"] for t in json.loads(cli("ls", "--json", check=True).stdout)]
    assert "tbt-lab" not in left and "tbt-lab-b" in left
    st = api.status(other.name)
    assert all(n["present"] for n in st["nodes"].values())
    assert st["controller"]["running"] and st["controller"]["switches_ready"] == 2
    ping = cli("exec", "e1", "--name", other.name, "--", "ping", "-c", "1", "-W", "2",
               "10.0.0.2")
    assert ping.returncode == 0, ping.stdout + ping.stderr


@pytest.mark.parametrize("text, expected", [
    ("generate: {star: {nodes: 3, prefix: ../../../../tmp/tbt-esc}}", "is not a valid prefix"),
    ("nodes: {'../x': {}, b: {}}\nlinks: [{between: ['../x', b]}]", "is not a valid node name"),
    ("nodes: {a: {kind: docker, image: 'a;b'}, b: {}}\nlinks: [{between: [a, b]}]",
     "is not a valid image"),
    ("nodes: {a: {kind: docker, image: UPPER}, b: {}}\nlinks: [{between: [a, b]}]",
     "is not a valid image"),
    ("nodes: {a: {kind: docker, image: '../../etc'}, b: {}}\nlinks: [{between: [a, b]}]",
     "is not a valid image"),
    ("nodes: {a: {kind: docker, image: ''}, b: {}}\nlinks: [{between: [a, b]}]",
     "is not a valid image"),
])
def test_names_that_could_escape_are_refused_before_anything_is_built(tmp_path, text,
                                                                       expected):
    path = write_topology(tmp_path, "tbt-esc", text)
    before = snapshot()
    res = cli("up", str(path))
    assert res.returncode == 2 and expected in " ".join(res.stderr.split()), res.stderr
    assert "Traceback" not in res.stderr
    assert not Path("/tmp/tbt-esc1").exists()
    assert snapshot() == before


def test_other_users_cannot_reach_the_api_or_pose_as_a_switch(bring_up):
    ledger = bring_up("sec", TRIANGLE)
    state = ledger.names.state_dir
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for f in ("state.json", "fabric.json", "api.sock"):
        assert stat.S_IMODE((state / f).stat().st_mode) == 0o600, f
    # the flow API is a Unix socket that user nobody cannot open
    res = subprocess.run([*AS_NOBODY, "-c", "import socket, sys\n"
                          "s = socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])",
                          str(ledger.names.api_socket)], capture_output=True, text=True)
    assert res.returncode != 0 and "PermissionError" in res.stderr, res.stderr
    # nobody connects to the OpenFlow port and claims switch a's datapath id: cut off at once
    impostor = """
import socket, struct, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
try:  # the controller may cut us off before the second send: that is also "closed"
    s.sendall(struct.pack("!BBHI", 4, 0, 8, 1))                        # HELLO
    s.sendall(struct.pack("!BBHIQIBB2xII", 4, 6, 32, 2, 1, 0, 1, 0, 0, 0))  # FEATURES_REPLY dpid 1
    data = s.recv(1024)
    print("closed" if not data else "answered")
except (BrokenPipeError, ConnectionResetError, TimeoutError):
    print("closed")
"""
    res = subprocess.run([*AS_NOBODY, "-c", impostor, str(ledger.of_port)],
                         capture_output=True, text=True, timeout=30)
    assert res.stdout.strip() == "closed", res.stdout + res.stderr
    health = api.status(ledger.name)["controller"]
    assert health["switches_ready"] == 3
    client = FlowClient(ledger)
    added = client.add([FlowSpec(src="a", dst="c", path=("a", "b", "c"), dport=5001)])
    assert [f["path"] for f in client.list()] == [["a", "b", "c"]] and added[0].id >= 1
    log = (state / "controller.log").read_text()
    assert "refused an OpenFlow connection" in log and "uid 65534" in log


def test_up_recovers_a_controller_that_is_alive_but_stuck(bring_up, tmp_path):
    ledger = bring_up("stuck", TRIANGLE)
    FlowClient(ledger).add([FlowSpec(src="a", dst="c", path=("a", "b", "c"), dport=5001)])
    old = ledger.controller.pid
    os.kill(old, signal.SIGSTOP)  # alive, but answers nothing
    try:
        path = write_topology(tmp_path, ledger.name, TRIANGLE)
        res = cli("up", str(path))
        assert res.returncode == 0, res.stderr
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(old, signal.SIGCONT)
    fresh = api.resolve(ledger.name)
    assert fresh.controller.pid != old and fresh.controller.alive()
    assert [f["path"] for f in FlowClient(fresh).list()] == [["a", "b", "c"]]


def test_concurrent_flow_adds_all_get_true_replies(bring_up):
    ledger = bring_up("conc", TRIANGLE)
    client = FlowClient(ledger)
    results: list[object] = []

    def worker(k: int) -> None:
        for i in range(6):
            try:
                results.append(client.add([FlowSpec(src="a", dst="c", path=("a", "b", "c"),
                                                    dport=10000 + 100 * k + i)])[0].id)
            except Exception as e:  # a reply of failure is the defect looked for
                results.append(e)

    # more clients at once than socketserver's default backlog of 5 (EAGAIN, once in CI)
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failures = [r for r in results if not isinstance(r, int)]
    assert not failures, failures[:3]
    installed = {f["id"] for f in client.list()}
    assert installed == set(results) and len(installed) == 96
    saved = json.loads((ledger.names.state_dir / "flows.json").read_text())
    assert {f["id"] for f in saved} == installed
    assert not list(ledger.names.state_dir.glob(".flows.json.*"))  # no temporary file left


CHAIN = """
jobs:
  - name: chain
    source: a
    input: 20kB
    duration: 8s
    tasks:
      work: {work: 0.01, memory: 64MB, node: c}
"""


def _run_cli(ledger, tmp_path: Path) -> subprocess.Popen:
    (tmp_path / "jobs.yaml").write_text(CHAIN)
    return subprocess.Popen([*TESTBED, "run", str(tmp_path / "jobs.yaml"), "--name",
                             ledger.name, "--scheduler", "otfs", "--out", str(tmp_path / "run")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_a_run_survives_its_controller_being_killed_mid_run(bring_up, tmp_path):
    ledger = bring_up("ctlkill", "nodes: {a: {cpu: 0.5}, b: {cpu: 0.5}, c: {cpu: 0.5}}\n"
                                 "links: [{between: [a, b], bw: 4}, {between: [b, c], bw: 4}]")
    proc = _run_cli(ledger, tmp_path)
    decisions = tmp_path / "run" / "decisions"
    wait_for(lambda: decisions.exists() and any(decisions.iterdir()), 90, "the first decision")
    traces = tmp_path / "run" / "traces"
    wait_for(lambda: any(f.stat().st_size for f in traces.glob("*")), 60, "items flowing")
    os.kill(Ledger.load(ledger.name).controller.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out
    run = tmp_path / "run"
    jobs = pd.read_csv(run / "jobs.csv")
    assert list(jobs.status) == ["done"], jobs.reason.tolist()
    meta = json.loads((run / "run.json").read_text())
    assert any(i["what"] == "controller lost" and i["action"].startswith("restarted")
               for i in meta["incidents"]), meta["incidents"]
    links = pd.read_csv(run / "links.csv")
    assert links.t_s.max() >= 8  # sampling went on past the kill
    assert FlowClient(api.resolve(ledger.name)).list() == []  # nothing leaked
    for f in ("items.csv", "flows.csv", "nodes.csv"):
        assert (run / f).exists(), f


@pytest.mark.slow
def test_a_run_started_with_a_dead_controller_restarts_it(bring_up, tmp_path):
    ledger = bring_up("ctldead", "nodes: {a: {cpu: 0.5}, b: {cpu: 0.5}, c: {cpu: 0.5}}\n"
                                 "links: [{between: [a, b], bw: 4}, {between: [b, c], bw: 4}]")
    os.kill(ledger.controller.pid, signal.SIGKILL)
    wait_for(lambda: not ledger.controller.alive(), 10, "the controller to die")
    proc = _run_cli(ledger, tmp_path)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out
    jobs = pd.read_csv(tmp_path / "run" / "jobs.csv")
    assert list(jobs.status) == ["done"], jobs.reason.tolist()
    assert api.resolve(ledger.name).controller.alive()


def test_a_link_set_down_outside_the_testbed_is_shown_and_routed_around(bring_up):
    ledger = bring_up("linkdown", "nodes: {a: {}, b: {}, c: {}, d: {}}\nlinks: "
                                  "[{between: [a, b]}, {between: [b, c]}, {between: [a, d]}, "
                                  "{between: [d, c]}]")
    # default route a -> c goes via b (lower index); take a-b down behind the testbed's back
    st = api.status(ledger.name)
    (ab,) = [lk for lk in st["links"] if lk["between"] == ["a", "b"]]
    assert ab["state"] == "up"
    subprocess.run(["ip", "link", "set", ab["interfaces"][0], "down"], check=True)
    wait_for(lambda: api.status(ledger.name)["controller"]["links_down"] == [["a", "b"]], 10,
          "the controller to see the link down")
    st = api.status(ledger.name)
    assert [lk["state"] for lk in st["links"] if lk["between"] == ["a", "b"]] == ["down"]
    res = cli("status", "--name", ledger.name)
    assert "DOWN" in res.stdout
    ping = cli("exec", "a", "--name", ledger.name, "--", "ping", "-c", "2", "-W", "2",
               "10.0.0.3")  # a -> c now through d
    assert ping.returncode == 0, ping.stdout
    ping = cli("exec", "a", "--name", ledger.name, "--", "ping", "-c", "3", "-W", "2",
               "10.0.0.2")  # a -> b through d and c (a reply to any of 3: rerouting settles)
    assert ping.returncode == 0, ping.stdout
    # a flow pinned across the dead link is reported broken, not silently black-holed
    client = FlowClient(ledger)
    client.add([FlowSpec(src="a", dst="c", path=("a", "b", "c"), dport=5001)])
    assert [f["state"] for f in client.list()] == ["broken"]
    subprocess.run(["ip", "link", "set", ab["interfaces"][0], "up"], check=True)
    wait_for(lambda: api.status(ledger.name)["controller"]["links_down"] == [], 10,
          "the link to come back")
    assert [f["state"] for f in client.list()] == ["ok"]


def test_unprivileged_exec_has_no_root_powers(bring_up):
    ledger = bring_up("unpriv", "nodes: {a: {}, b: {}}\nlinks: [{between: [a, b]}]")
    res = cli("exec", "a", "--name", ledger.name, "--unprivileged", "--", "id", "-u")
    assert res.returncode == 0 and res.stdout.strip() == "65534", res.stdout + res.stderr
    res = cli("exec", "a", "--name", ledger.name, "--unprivileged", "--", "ls", "/run/testbed")
    assert res.returncode != 0 and "Permission denied" in res.stderr
    for sock in ("/var/run/docker.sock", "/var/run/openvswitch/db.sock"):
        res = cli("exec", "a", "--name", ledger.name, "--unprivileged", "--", "/usr/bin/python3",
                  "-c", f"import socket; socket.socket(socket.AF_UNIX).connect({sock!r})")
        assert res.returncode != 0 and "PermissionError" in res.stderr, (sock, res.stderr)
    res = cli("exec", "a", "--name", ledger.name, "--unprivileged", "--", "ip", "link", "set",
              "eth0", "down")
    assert res.returncode != 0
    # the network still works for it: b's kernel answers a connection to a closed port
    res = cli("exec", "a", "--name", ledger.name, "--unprivileged", "--", "/usr/bin/python3",
              "-c", "import socket; socket.create_connection(('10.0.0.2', 9), timeout=3)")
    assert "ConnectionRefusedError" in res.stderr, res.stderr


def test_a_killed_probe_leaves_no_namespace():
    before = sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []
    code = "from testbed.net.probe import probe; probe(); import time; time.sleep(30)"
    for delay in (0.05, 0.15, 0.3, 0.6):
        p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
    after = sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []
    assert after == before


def test_doctor_fails_when_a_device_fails_its_checks(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key = tmp_path / "key"
    key.write_text("not a key")
    path = write_topology(tmp_path, "tbt-doc", f"""
nodes:
  e1: {{}}
  nx1: {{kind: device, ssh: {{host: 127.0.0.1, port: {port}, key: {key}}}}}
links: [{{between: [e1, nx1]}}]
""")
    res = cli("doctor", str(path))
    assert res.returncode == 1 and "device nx1" in res.stdout, res.stdout + res.stderr


def _running_trial(results: Path, campaign: str) -> str:
    """Wait until the campaign's first trial is deciding on its testbed; that testbed's name."""
    from testbed.net.ledger import known_testbeds

    running = results / campaign / "running.json"

    def mid_trial() -> bool:
        try:
            entry = json.loads(running.read_text())["trials"][0]
        except (OSError, ValueError, KeyError, IndexError):
            return False
        decisions = results / campaign / "trials" / entry["trial"] / "run" / "decisions"
        return entry["testbed"] in known_testbeds() and decisions.exists() and any(
            decisions.iterdir())

    wait_for(mid_trial, 120, "a trial to be running")
    return json.loads(running.read_text())["trials"][0]["testbed"]


@pytest.mark.slow
def test_a_killed_emulated_campaign_resumes_to_completion(tmp_path):
    from testbed.campaign.run import run_campaign
    from testbed.net.ledger import known_testbeds

    path = small_emulated_campaign(tmp_path, "killed", ["otfa", "tp"], duration_s=3)
    results = tmp_path / "results"
    before = snapshot()
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from testbed.campaign.run import run_campaign; "
         "run_campaign(sys.argv[1], root=Path(sys.argv[2]))", str(path), str(results)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    left = _running_trial(results, "killed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert left in known_testbeds()  # the killed trial's testbed is still up, tasks and all
    run_campaign(path, root=results, resume=True)
    df = pd.read_csv(results / "killed" / "trials.csv", dtype={"trial": str})
    assert len(df) == 2 and df.trial.is_unique and list(df.status) == ["done", "done"], \
        df.reason.tolist()
    assert not (results / "killed" / "running.json").exists()
    assert snapshot() == before


@pytest.mark.slow
def test_a_terminated_campaign_removes_its_trials_testbed_and_keeps_the_trace(tmp_path):
    """SIGTERM (kill, timeout, a batch system) is not SIGKILL: the command cleans up."""
    from testbed.net.ledger import known_testbeds

    path = small_emulated_campaign(tmp_path, "termed", ["otfa"], duration_s=30)
    results = tmp_path / "results"
    before = snapshot()
    proc = subprocess.Popen([*TESTBED, "campaign", str(path), "--out", str(results)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    left = _running_trial(results, "termed")
    time.sleep(4)  # items are flowing
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, said = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, said
    assert time.monotonic() - t0 < 30  # not the job's 30 s
    assert left not in known_testbeds() and snapshot() == before
    (trial,) = (results / "termed" / "trials").iterdir()
    jobs = pd.read_csv(trial / "run" / "jobs.csv")  # what the run recorded is written out
    assert list(jobs.status) == ["interrupted"] and jobs.items_done.iloc[0] > 0, jobs


@pytest.mark.slow
def test_a_run_with_unprivileged_tasks(bring_up, tmp_path):
    from testbed.net import cgroups

    ledger = bring_up("unprun", "nodes: {a: {cpu: 0.5}, b: {cpu: 0.5}, c: {cpu: 0.5}}\n"
                                "links: [{between: [a, b], bw: 4}, {between: [b, c], bw: 4}]")
    (tmp_path / "jobs.yaml").write_text(CHAIN)
    handover = lambda: set(Path(tempfile.gettempdir()).glob("testbed-tasks-*"))  # noqa: E731
    handed_before = handover()
    proc = subprocess.Popen([*TESTBED, "run", str(tmp_path / "jobs.yaml"), "--name",
                             ledger.name, "--scheduler", "otfs", "--unprivileged", "--out",
                             str(tmp_path / "run")], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    uids: set[int] = set()

    def task_uids() -> bool:
        for pid in cgroups.pids(ledger.names):
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{pid}/status").read_text()
                cmd = Path(f"/proc/{pid}/cmdline").read_text()
                # tasks, not the profiling runs; and not setpriv itself, which is still root
                # for a moment before it drops to nobody and runs the task
                if "dag_task" in cmd and ".json" in cmd and \
                        not cmd.split("\0")[0].endswith("setpriv"):
                    uids.add(int(status.split("Uid:")[1].split()[0]))
        return bool(uids)

    wait_for(task_uids, 90, "the task processes")
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out
    assert uids == {65534}
    jobs = pd.read_csv(tmp_path / "run" / "jobs.csv")
    assert list(jobs.status) == ["done"] and jobs.items_done[0] > 10, jobs.reason.tolist()
    assert handover() == handed_before, "the directory that handed files to nobody was left"
