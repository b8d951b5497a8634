"""Physical devices over SSH, tested against a real OpenSSH server in a network namespace that
plays the board (tests/fakeboard.py): attach through a shaped VXLAN tunnel, exec, deploy and
clean removal, host-key checking, stats with tegrastats, reconnection, unreachable devices."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from testbed import api, measure
from testbed.devices.ssh import Endpoint, Session
from testbed.devices.stats import Collector, parse_tegrastats
from tests.conftest import ROOT, assert_goodput, cli, needs_root, snapshot, wait_for, write_topology
from tests.fakeboard import FakeBoard

pytestmark = [needs_root, pytest.mark.emulation]

DATA = Path(__file__).parent / "data"
TEGRA_LINES = [ln for ln in (DATA / "tegrastats.txt").read_text().splitlines()
               if ln and not ln.startswith("#")]
DEPLOY_BASE = Path.home() / ".edge-testbed"


@pytest.fixture
def board(tmp_path):
    b = FakeBoard(tmp_path, tegrastats=TEGRA_LINES[1]).start()
    yield b
    b.close()


def device_topology(tmp_path: Path, board: FakeBoard, name: str = "tbt-dev") -> Path:
    return write_topology(tmp_path, name, f"""
nodes:
  e1: {{}}
  e2: {{}}
  nx1: {{kind: device, ssh: {board.ssh_yaml()}, profile: jetson-xavier-nx}}
links:
  - {{between: [nx1, e1], bw: 5}}
  - {{between: [e1, e2], bw: 20}}
""")


@pytest.mark.slow
def test_device_joins_the_fabric_and_leaves_no_trace(tmp_path, board):
    before = snapshot()
    board_before = board.run("ip", "-o", "link").stdout
    had_base = DEPLOY_BASE.exists()
    path = device_topology(tmp_path, board)
    res = cli("up", str(path))
    assert res.returncode == 0, res.stderr
    try:
        st = api.status("tbt-dev")
        dev = st["nodes"]["nx1"]
        assert dev["kind"] == "device" and dev["device"] == {
            "reachable": True, "tunnel": "up", "host": board.ip}
        ledger = api.resolve("tbt-dev")
        att = ledger.extra["devices"]["nx1"]

        # the device's end: testbed address on the tunnel, egress shaped like the link
        shown = board.run("ip", "-o", "-4", "addr", "show", att["iface"]).stdout
        assert f"{dev['ip']}/16" in shown
        classes = board.run("tc", "class", "show", "dev", att["iface"]).stdout
        assert "class htb 1:1 root" in classes and "rate 5Mbit" in classes, classes

        # shaped both ways through the tunnel, within 3% of the link's ideal TCP goodput
        ideal = measure.ideal_goodput_mbit(5)
        for src, dst in [("e1", "nx1"), ("nx1", "e2")]:
            assert_goodput("tbt-dev", src, dst, ideal, 0.03, seconds=5)

        # a per-flow rate from the device is enforced on the device's egress
        from testbed.routing import FlowSpec
        from testbed.sdn import FlowClient

        FlowClient(ledger).add([FlowSpec(src="nx1", dst="e2", path=("nx1", "e1", "e2"), dport=5301,
                                         rate_mbit=2.0)])
        assert_goodput("tbt-dev", "nx1", "e2", measure.ideal_goodput_mbit(2), 0.05, seconds=5,
                       port=5301)
        FlowClient(ledger).remove_all()

        # exec over SSH: in the deploy directory, exit codes pass through
        res = cli("exec", "nx1", "--name", "tbt-dev", "--", "sh", "-c",
                  "pwd; ls workloads; ip -o -4 addr show")
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith(att["deploy_dir"]) and "dag_task.py" in res.stdout
        assert cli("exec", "nx1", "--name", "tbt-dev", "--", "sh", "-c",
                   "exit 5").returncode == 5
        assert Path(att["deploy_dir"], "workloads", "dag_task.py").exists()  # deployed by SFTP
    finally:
        res = cli("down", "--name", "tbt-dev")
    assert res.returncode == 0, res.stderr
    assert "devices: nx1" in res.stdout
    assert board.run("ip", "-o", "link").stdout == board_before  # tunnel and tc state gone
    assert not Path(att["deploy_dir"]).exists() and DEPLOY_BASE.exists() == had_base
    assert snapshot() == before


def test_host_keys_are_verified(tmp_path, board):
    path = device_topology(tmp_path, board, "tbt-keys")
    before = snapshot()
    # a different key on record for the board's address: refused, even with the opt-in
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    board.known_hosts.write_text(f"{board.ip} {Path(f'{other}.pub').read_text()}")
    for extra in ([], ["--accept-new-host-keys"]):
        res = cli("up", str(path), *extra)
        assert res.returncode == 2, res.stdout + res.stderr
        assert "does not match" in res.stderr and "ssh-keygen" in res.stderr
    # no key on record: refused unless the user opts in; then saved and trusted from then on
    board.known_hosts.write_text("")
    res = cli("up", str(path))
    assert res.returncode == 2 and "--accept-new-host-keys" in res.stderr, res.stderr
    assert snapshot() == before
    res = cli("doctor", str(path), "--accept-new-host-keys")
    assert res.returncode == 0 and "device nx1: ready" in res.stdout, res.stdout + res.stderr
    assert board.ip in board.known_hosts.read_text()
    res = cli("doctor", str(path))
    assert "device nx1: ready" in res.stdout


def test_device_problems_are_reported_before_anything_is_built(tmp_path, board):
    before = snapshot()
    text = device_topology(tmp_path, board).read_text()
    cases = {
        text.replace(f"key: {board.key}", f"key: {tmp_path}/missing_key"): "does not exist",
        text.replace(f"host: {board.ip}", "host: 172.31.250.3"): "cannot connect",
        text.replace("user: root", "user: root, password_env: TBT_NO_SUCH_VAR"):
            "TBT_NO_SUCH_VAR",
        text.replace("user: root", "user: root, password: hunter2"):
            "passwords never go in the file",
    }
    for i, (bad, words) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.yaml"
        path.write_text(bad)
        res = cli("up", str(path), timeout=60)
        assert res.returncode == 2, (bad, res.stdout, res.stderr)
        assert words in res.stderr and "hunter2" not in res.stderr, res.stderr
    assert snapshot() == before


def test_tegrastats_lines_parse():
    nano, nx, orin = (parse_tegrastats(ln) for ln in TEGRA_LINES)
    assert nano["ram_used_mb"] == 2019 and nano["ram_total_mb"] == 3964
    assert nano["cpu_cores"] == 4 and nano["cpu_pct"] == pytest.approx(6.75)
    assert nano["gpu_pct"] == 0 and nano["emc_pct"] == 5 and nano["temp_gpu_c"] == 36.5
    assert nano["power_pom_5v_in_mw"] == 2713
    assert nx["cpu_cores"] == 6 and nx["cpu_cores_online"] == 4 and nx["gpu_pct"] == 99
    assert nx["power_vdd_in_mw"] == 9806 and nx["power_vdd_in_avg_mw"] == 8211
    assert orin["cpu_cores_online"] == 8 and orin["ram_total_mb"] == 30536
    assert orin["power_vdd_gpu_soc_mw"] == 2387 and orin["temp_tj_c"] == 44.281
    assert "temp_gpu_c" not in orin  # -256C: sensor off


def test_stats_collector_and_reconnection_after_sshd_restart(board):
    ep = Endpoint.of("nx1", {"host": board.ip, "user": "root", "key": str(board.key),
                             "known_hosts": str(board.known_hosts)})
    with Session(ep, retry_for_s=20) as session:
        assert session.run("echo hi").out == "hi\n"
        collector = Collector(session, interval_s=0.5).start()
        assert abs(collector.offset.offset_s) < 0.01  # the board shares this host's clock
        wait_for(lambda: len(collector.records) >= 3, 10, "three samples")
        board.stop_sshd()  # every connection drops, as when a board reboots
        restart = threading.Timer(1.5, board.start_sshd)
        restart.start()
        restart.join()
        wait_for(lambda: session.reconnects >= 1, 20, "the sampler to reconnect")
        assert session.run("echo back").out == "back\n"  # reconnected with backoff
        before = len(collector.records)
        wait_for(lambda: sum("error" not in r for r in collector.records[before:]) >= 2, 15,
                 "samples after the restart")
        records = collector.stop()
    assert session.reconnects >= 1
    good = [r for r in records if "error" not in r]
    gaps = [b["t_s"] - a["t_s"] for a, b in zip(records, records[1:], strict=False)]
    assert len(good) >= 4 and max(gaps) > 1.5  # the outage is visible in the trace
    assert all(r["gpu_pct"] == 99 and r["power_vdd_in_mw"] == 9806 for r in good)
    assert all(0 < r["mem_used_mb"] < r["mem_total_mb"] for r in good)
    assert all(abs(r["t_s"] - r["device_time_s"]) < 0.01 for r in good)
    stamps = [r["t_s"] for r in records]
    assert stamps == sorted(stamps)


@pytest.mark.slow
def test_an_unreachable_device_shows_in_status_and_fails_runs_with_a_reason(tmp_path, board):
    path = device_topology(tmp_path, board, "tbt-gone")
    assert cli("up", str(path)).returncode == 0
    jobs = ("jobs:\n  - name: j\n    source: e2\n    input: 20kB\n    duration: {}s\n"
            "    tasks:\n      work: {{work: 0.002, memory: 64MB, node: nx1}}\n")
    try:
        # the board goes away in the middle of a run: its job fails with the reason, promptly
        (tmp_path / "long.yaml").write_text(jobs.format(30))
        drop = threading.Timer(9, board.stop_sshd)
        drop.start()
        t0 = time.monotonic()
        cli("run", str(tmp_path / "long.yaml"), "--name", "tbt-gone", "-s", "otfs",
            "--out", str(tmp_path / "run1"), timeout=180)
        drop.join()
        import pandas as pd

        (job,) = pd.read_csv(tmp_path / "run1" / "jobs.csv").itertuples()
        assert job.status == "failed" and "nx1" in job.reason and "connection lost" in job.reason
        assert time.monotonic() - t0 < 40  # not the job's 30 s plus a hang

        t0 = time.monotonic()
        st = api.status("tbt-gone")["nodes"]["nx1"]
        assert not st["device"]["reachable"] and "cannot connect" in st["device"]["error"]
        assert "UNREACHABLE" in cli("status", "--name", "tbt-gone").stdout
        assert time.monotonic() - t0 < 30
        (tmp_path / "jobs.yaml").write_text(jobs.format(5))
        t0 = time.monotonic()
        res = cli("run", str(tmp_path / "jobs.yaml"), "--name", "tbt-gone", "-s", "otfs",
                  "--out", str(tmp_path / "run"), timeout=180)
        assert res.returncode != 0 and "nx1" in res.stderr and "cannot connect" in res.stderr
        assert time.monotonic() - t0 < 120
        res = cli("down", "--name", "tbt-gone")  # cannot undo the device's side: says so
        assert res.returncode == 1 and "again once it is reachable" in res.stderr
    finally:
        board.start_sshd()
    res = cli("down", "--name", "tbt-gone")
    assert res.returncode == 0, res.stderr
    assert "tbt-gone" not in api.known_testbeds()


@pytest.mark.slow
def test_a_run_places_a_task_on_the_device(tmp_path, board):
    path = device_topology(tmp_path, board, "tbt-devrun")
    assert cli("up", str(path)).returncode == 0
    try:
        (tmp_path / "jobs.yaml").write_text(
            "jobs:\n  - name: j\n    source: e2\n    input: 20kB\n    duration: 6s\n"
            "    tasks:\n      work: {work: 0.002, memory: 64MB, node: nx1}\n")
        res = cli("run", str(tmp_path / "jobs.yaml"), "--name", "tbt-devrun", "-s", "otfs",
                  "--out", str(tmp_path / "run"))
        assert res.returncode == 0, res.stdout + res.stderr
        import pandas as pd

        (job,) = pd.read_csv(tmp_path / "run" / "jobs.csv").itertuples()
        assert job.status == "done" and job.placement == "work@nx1" and job.items_done > 20
        assert 0.85 < job.fidelity < 1.15, job
        stats = pd.read_csv(tmp_path / "run" / "board_stats.csv")
        assert len(stats) >= 4 and (stats.gpu_pct == 99).all() and stats.t_s.is_monotonic_increasing
        # the device's trace, shifted onto the testbed clock, lines up with the source's
        events = pd.read_csv(tmp_path / "run" / "events.csv")
        assert set(events.task) >= {"source", "work"}
    finally:
        assert cli("down", "--name", "tbt-devrun").returncode == 0
    assert ROOT.exists()


def test_json_lines_traces_are_moved_onto_the_testbed_clock_by_their_time_fields():
    from testbed.nodes.device import on_testbed_clock

    rec = {"start": 100.5, "end": 101.0, "t_done": 100.75, "round": 3, "compute_s": 0.25,
           "t_flag": True, "device": "nx1"}
    assert on_testbed_clock(rec, 30.0) == {**rec, "start": 70.5, "end": 71.0, "t_done": 70.75}


@pytest.mark.slow
def test_traces_from_a_board_with_a_shifted_clock_are_put_on_the_testbed_clock(tmp_path):
    """The board's clock runs 30 s ahead: its task's events must still fall between the
    source's send and completion of the same item once shifted (uncorrected they would be
    30 s late)."""
    import pandas as pd

    shifted = FakeBoard(tmp_path, index=3, tegrastats=TEGRA_LINES[1], clock_shift_s=30.0).start()
    try:
        path = device_topology(tmp_path, shifted, "tbt-devclock")
        assert cli("up", str(path)).returncode == 0
        try:
            (tmp_path / "jobs.yaml").write_text(
                "jobs:\n  - name: j\n    source: e2\n    input: 20kB\n    duration: 5s\n"
                "    tasks:\n      work: {work: 0.002, memory: 64MB, node: nx1}\n")
            res = cli("run", str(tmp_path / "jobs.yaml"), "--name", "tbt-devclock", "-s",
                      "otfs", "--out", str(tmp_path / "run"))
            assert res.returncode == 0, res.stdout + res.stderr
            stats = pd.read_csv(tmp_path / "run" / "board_stats.csv")
            assert (abs(stats.clock_offset_s - 30.0) < 0.5).all()  # the shift was measured
            ev = pd.read_csv(tmp_path / "run" / "events.csv")
            t = {(r.task, r.event, r.item): r.ts_ns for r in ev.itertuples()}
            items = [i for (task, e, i) in t if task == "source" and e == "done"]
            assert len(items) > 10
            for i in items:
                assert t[("source", "sent", i)] <= t[("work", "recv", i)] + 5e6, i
                assert t[("work", "end", i)] <= t[("source", "done", i)] + 5e6, i
        finally:
            assert cli("down", "--name", "tbt-devclock").returncode == 0
    finally:
        shifted.close()


@pytest.mark.slow
@pytest.mark.parametrize("delay_s", [0.7, 1.1, 1.5])
def test_down_after_sigkill_of_up_also_cleans_the_device(tmp_path, board, delay_s):
    import signal

    from tests.conftest import TESTBED

    before, board_before = snapshot(), board.run("ip", "-o", "link").stdout
    had_base = DEPLOY_BASE.exists()
    path = device_topology(tmp_path, board, "tbt-devkill")
    proc = subprocess.Popen([*TESTBED, "up", str(path)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(delay_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    from testbed.net.ledger import Ledger

    ledger = Ledger.load("tbt-devkill")
    if ledger and ledger.controller and ledger.controller.alive():
        import os

        os.kill(ledger.controller.pid, signal.SIGKILL)
    res = cli("down", "--name", "tbt-devkill")
    assert res.returncode == 0, res.stderr
    assert snapshot() == before
    assert board.run("ip", "-o", "link").stdout == board_before
    assert DEPLOY_BASE.exists() == had_base
