"""The training kind (EdgeSplit): Algorithm 6 and its baselines as pure functions, the training
file's checks, and a real split training over shaped links whose bytes on the path's switches
match the model's activation and weight sizes."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed import api
from testbed.errors import InputError
from testbed.kinds.training.problem import BlockProfile, Problem, build
from testbed.kinds.training.strategies import (
    adaptive_fl,
    allocate,
    edgesplit,
    edgesplit_fix,
    vanilla_fl,
)
from tests.conftest import ROOT, cli, needs_root
from tests.fakeboard import FakeBoard

TOPO = ROOT / "topologies" / "split-fl-6.yaml"
LENET = ROOT / "workloads" / "split-fl-lenet.yaml"


def random_problem(seed: int, m: int, n: int, tight_memory: bool = False) -> Problem:
    rng = np.random.default_rng(seed)
    # device time grows with the blocks it keeps, the server's share shrinks
    a = np.cumsum(rng.uniform(0.5, 3, (m, n)), axis=1) + rng.uniform(0, 1, (m, 1))
    c = rng.uniform(1, 80, n)
    feasible = np.ones((m, n), bool)
    if tight_memory:
        feasible[:, rng.integers(1, n):] = False
    return Problem(tuple(f"d{i}" for i in range(m)), a, c, feasible, 30.0, 10)


def shared_problem(m: int, device_batch_s: float, server_batch_s: float) -> Problem:
    """m identical devices, 2 blocks, 10 batches: cut 1 splits, cut 2 is all local."""
    b, act, weights = 10, np.array([4.0, 0.0]), np.array([2.0, 6.0])  # Mbit per round
    dev = np.tile([b * device_batch_s, 2 * b * device_batch_s], (m, 1))
    srv = np.array([b * server_batch_s, 0.0])
    return Problem(tuple(f"d{i}" for i in range(m)), dev + srv, act + weights,
                   np.ones((m, 2), bool), 40.0, b, dev, srv, act)


def test_the_shared_server_model_is_eq_4_5_alone_and_the_servers_total_work_when_saturated():
    bw = np.full(1, 10.0)
    alone = shared_problem(1, 0.2, 0.5)
    for cut in (1, 2):  # one device, or all local: nothing to share
        cuts = np.array([cut])
        assert alone.shared_server_round_times(cuts, bw) == pytest.approx(
            alone.round_times(cuts, bw))
    # eight devices whose batches need the server 5x longer than their own part: the server
    # is busy all the time, so a round takes all their server work, not one device's
    busy, cuts, bw = shared_problem(8, 0.1, 0.5), np.ones(8, int), np.full(8, 5.0)
    shared = busy.shared_server_round_times(cuts, bw)
    assert shared.max() > 0.95 * 8 * 10 * 0.5 > 2 * busy.round_times(cuts, bw).max()
    assert np.allclose(shared, shared[0])  # identical devices, identical rounds
    # a server that is hardly needed: close to eq. 4.5
    idle = shared_problem(8, 2.0, 0.01)
    assert idle.shared_server_round_times(cuts, bw) == pytest.approx(
        idle.round_times(cuts, bw), rel=0.05)


def test_devices_arriving_together_share_a_nonpipe_server_and_queue_at_splitpipe():
    """Four identical devices start together: one batch is 0.1 s forward, 0.02 s up, 0.1 s
    at the server alone, 0.02 s down, 0.1 s backward. A non-pipe server runs the four
    batches at once at a quarter speed each, so every batch waits for all four (0.64 s a
    cycle); SplitPipe serves them one after another and the devices fall into a pipeline
    in which the server is never idle (0.4 s a cycle once started)."""
    m, b, cuts, bw = 4, 10, np.ones(4, int), np.full(4, 10.0)
    together = shared_problem(m, 0.2, 0.1)
    weights = 2.0 / 10.0  # Mbit / (Mbit/s), half before the batches, half after
    cycle = 0.1 + 0.02 + m * 0.1 + 0.02 + 0.1
    assert together.shared_server_round_times(cuts, bw) == pytest.approx(b * cycle + weights)
    queued = dataclasses.replace(together, one_batch_at_a_time=True)
    rounds = queued.shared_server_round_times(cuts, bw)
    assert len(set(np.round(rounds, 9))) == m  # served in turn, they end in turn
    server_work = m * b * 0.1  # the server's busy time is a floor for the last device
    assert server_work < rounds.max() <= server_work + weights + 0.12 + 0.12 + 0.1 * m
    assert rounds.max() < b * cycle  # pipelining beats four batches at a quarter speed


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 12), st.integers(1, 20),
       st.floats(0.5, 200))
def test_p2_finishes_every_device_together_within_the_total(seed, m, n, total):
    rng = np.random.default_rng(seed)
    a, c = rng.uniform(0, 10, m), rng.uniform(0.1, 100, m)
    bw, t = allocate(a, c, total)
    assert bw.sum() == pytest.approx(total, rel=1e-4)
    assert np.allclose(a + c / bw, t, rtol=1e-4, atol=1e-4)
    # nobody can do better: moving bandwidth to the slowest device slows another one
    assert t <= (a + c / (total / m)).max() + 1e-6


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 10), st.integers(2, 20), st.booleans())
def test_edgesplit_is_never_worse_than_its_baselines(seed, m, n, tight):
    p = random_problem(seed, m, n, tight)
    best = edgesplit(p)
    assert all(p.feasible[i, j - 1] for i, j in enumerate(best.cuts))
    assert best.bandwidth_mbit.sum() <= p.total_mbit * (1 + 1e-6)
    assert np.allclose(best.round_s, p.round_times(best.cuts, best.bandwidth_mbit))
    for baseline in (adaptive_fl, vanilla_fl, edgesplit_fix):
        try:
            other = baseline(p)
        except InputError:  # the baseline's cut does not fit the memory: it cannot train
            assert tight
            continue
        assert best.makespan_s <= other.makespan_s * (1 + 1e-6), baseline.__name__


def test_the_round_model_by_hand():
    """Two blocks, one device: eq. 4.5 with b batches, activations per batch, weights."""
    dev = BlockProfile((0.1, 0.2), (0.2, 0.4), (1_000_000, 40), (500_000, 4_000))
    srv = dev.scaled(0.5)
    p = build(("d",), {"d": dev, "s": srv}, "s", {"d": 10**10}, batches=5, total_mbit=8.0)
    # cut 1: 5 x (0.3 device + 0.3 server) s; 2 x (5 x 1 MB + 0.5 MB) = 11 MB = 88 Mbit
    assert p.A[0, 0] == pytest.approx(5 * (0.3 + 0.3)) and p.C[0] == pytest.approx(88.0)
    # all local: 5 x 0.9 s; only the weights travel, down and up: 2 x 504 kB
    assert p.A[0, 1] == pytest.approx(4.5) and p.C[1] == pytest.approx(2 * 504_000 * 8 / 1e6)
    split = edgesplit(p)
    assert split.cuts.tolist() == [2] and split.makespan_s == pytest.approx(4.5 + 8.064 / 8)


def test_memory_decides_what_a_device_can_train():
    dev = BlockProfile((0.1,) * 4, (0.1,) * 4, (10**6,) * 4, (10**8,) * 4)
    memory = {"small": dev.train_memory_bytes(2), "big": 10**12}
    p = build(("small", "big"), {"small": dev, "big": dev, "s": dev}, "s", memory, 2, 30.0)
    assert p.feasible[0].tolist() == [True, True, False, False] and p.feasible[1].all()
    assert edgesplit(p).cuts[0] <= 2
    with pytest.raises(InputError, match="device small cannot hold blocks 1-4"):
        vanilla_fl(p)
    memory["small"] = 1
    p = build(("small",), {"small": dev, "s": dev}, "s", memory, 2, 30.0)
    with pytest.raises(InputError, match="no cut of the model fits device small's memory"):
        edgesplit(p)


def test_schedule_prints_cuts_bandwidths_and_predicted_rounds():
    # the CLI's JSON once; the other strategies through the library, in this process (each
    # CLI process imports torch: seconds)
    plans = {"edgesplit": json.loads(cli("schedule", str(TOPO), str(LENET), "-s", "edgesplit",
                                         "--json", check=True).stdout)}
    plans.update({s: json.loads(api.schedule(TOPO, LENET, s).to_json())
                  for s in ("adaptive-fl", "vanilla-fl", "edgesplit-fix")})
    for s, plan in plans.items():
        ext = plan["extension"]
        assert plan["kind"] == "training" and ext["strategy"] == s
        assert set(ext["cuts"]) == {"d1", "d2", "d3", "d4"}
        assert sum(ext["bandwidth_mbit"].values()) == pytest.approx(20.0, rel=1e-3)
        assert ext["makespan_predicted_s"] == pytest.approx(max(ext["round_predicted_s"]
                                                                .values()))
        assert [f["path"] for f in plan["flows"]][0] == ["d1", "relay", "srv"]
    assert plans["edgesplit-fix"]["extension"]["cuts"]["d1"] == 2  # half of LeNet's 5 blocks
    assert set(plans["vanilla-fl"]["extension"]["bandwidth_mbit"].values()) == {5.0}
    table = cli("schedule", str(TOPO), str(LENET), "-s", "edgesplit", check=True).stdout
    assert "predicted round" in table and "d4" in table


@pytest.mark.parametrize("change,message", [
    ("model: alexnet", "model"),
    ("server: zz", "server: 'zz' is not a node"),
    ("devices: [d1, srv]", "devices[1]: 'srv' is the server"),
    ("total_bandwidth: 500Mbit", "more than the server's links carry (30 Mbit/s)"),
    ("batch_size: 0", "batch_size"),
    ("scale: {work: 0}", "scale.work"),
    ("scale: {data: 0.1}", "scale.data"),
])
def test_bad_training_files_name_the_field(tmp_path, change, message):
    key = change.split(":")[0]
    lines = [ln for ln in LENET.read_text().splitlines() if not ln.startswith(key + ":")]
    path = tmp_path / "t.yaml"
    path.write_text("\n".join(lines) + f"\n{change}\n")
    with pytest.raises(InputError, match=re.escape(message)) as e:
        api.schedule(TOPO, path, "edgesplit")
    assert str(path) in str(e.value)


def test_scale_work_narrows_the_model_and_the_plan_follows(tmp_path):
    """`scale: {work: f}`: layers sqrt(f) as wide, so weights and compute shrink about f-fold,
    activations sqrt(f)-fold, and the same blocks (cut points) remain."""
    sys.path.insert(0, str(ROOT / "workloads"))
    from split_models import blocks

    from testbed.kinds.training.decision import profile_here

    for model in ("vgg16", "resnet50"):
        full, small = blocks(model)[0], blocks(model, width=0.1 ** 0.5)[0]
        assert len(full) == len(small)
        p_full, p_small = (sum(q.numel() for b in bs for q in b.parameters())
                           for bs in (full, small))
        assert 0.07 < p_small / p_full < 0.13
    full_p, small_p = profile_here("vgg16", 8), profile_here("vgg16", 8, 0.1 ** 0.5)
    act = np.array(small_p.activation_bytes) / np.array(full_p.activation_bytes)
    assert np.allclose(act[:13], 0.1 ** 0.5, rtol=0.03)  # the convolutions' outputs
    assert sum(small_p.forward_s) + sum(small_p.backward_s) < 0.5 * (
        sum(full_p.forward_s) + sum(full_p.backward_s))
    vgg = ROOT / "workloads" / "split-fl-vgg16.yaml"
    path = tmp_path / "small.yaml"
    path.write_text(vgg.read_text() + "\nscale: {work: 0.1}\n")
    big, little = (api.schedule(TOPO, f, "edgesplit-fix").extension for f in (vgg, path))
    assert little.makespan_predicted_s < 0.3 * big.makespan_predicted_s


def test_a_streams_scheduler_is_refused_for_training():
    with pytest.raises(InputError, match="plans streams workloads"):
        api.schedule(TOPO, LENET, "otfa")


def test_digits_partition_is_non_iid_and_disjoint():
    from testbed.kinds.training.spec import digits_partition, loads
    from testbed.topology import load

    w = loads(LENET.read_text(), str(LENET), load(TOPO))
    parts, test = digits_partition(w)
    assert len(parts) == 4 and all(len(set(p["y"])) == 5 for p in parts)
    rows = [tuple(x) for p in parts for x in p["x"]]
    assert len(rows) + len(test["y"]) <= 1797 and len(test["y"]) == 359


SMALL_TOPO = """
nodes: {{srv: {{cpu: 0.6}}, r: {{cpu: 0.1}}, d1: {{cpu: 0.4}}, d2: {{kind: docker, cpu: 0.4}},
        nx1: {{kind: device, ssh: {ssh}, profile: jetson-xavier-nx}}}}
links: [{{between: [d1, r], bw: 10}}, {{between: [d2, r], bw: 10}},
        {{between: [nx1, r], bw: 10}}, {{between: [r, srv], bw: 20}}]
"""


def _train(ledger, tmp_path: Path, fields: str, *flags: str) -> Path:
    """Run EdgeSplit-Fix training LeNet on digits (server srv, batches of 16, B = 8 Mbit/s,
    plus `fields`) on the testbed; the run's directory."""
    wl = tmp_path / "train.yaml"
    wl.write_text("kind: training\nserver: srv\nmodel: lenet\ndataset: digits\n"
                  "batch_size: 16\ntotal_bandwidth: 8Mbit\n" + fields)
    out = tmp_path / "run"
    res = cli("run", str(wl), "--name", ledger.name, "--scheduler", "edgesplit-fix",
              "--out", str(out), *flags, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    return out


@pytest.fixture
def torch_board(tmp_path):
    """A board over SSH with its own torch (this interpreter), as a Jetson has."""
    b = FakeBoard(tmp_path, index=3, python=sys.executable).start()
    yield b
    b.close()


@needs_root
@pytest.mark.emulation
@pytest.mark.slow
def test_split_training_moves_the_models_bytes_over_the_planned_flows(torch_board, edge_image,
                                                                     bring_up, tmp_path):
    """EdgeSplit-Fix cuts LeNet (at half its work, `scale:`) after block 2 on a host node, a
    container and a board over SSH: every batch's activations go up and their gradients come
    down over each device's rate-capped flow, the weights at each round's end; the switches
    on the path count those bytes."""
    ledger = bring_up("sfl", SMALL_TOPO.format(ssh=torch_board.ssh_yaml()))
    out = _train(ledger, tmp_path, "devices: [d1, d2, nx1]\nbatches_per_round: 5\nrounds: 3\n"
                                   "lr: 0.05\nscale: {work: 0.5}\n")
    rounds = pd.read_csv(out / "rounds.csv")
    devices = pd.read_csv(out / "devices.csv")
    assert rounds["round"].tolist() == [0, 1, 2]
    assert set(rounds.columns) >= {"round_time_measured_s", "round_time_predicted_s",
                                   "accuracy", "loss", "server_peak_mem_mb",
                                   "server_active_peak_mb", "bytes_sent",
                                   "round_time_predicted_shared_s", "fidelity_shared"}
    # three devices' server-side blocks on one server: never faster than eq. 4.5's alone
    assert (devices.round_time_predicted_shared_s >=
            devices.round_time_predicted_s - 1e-9).all()
    assert (devices.cut == 2).all() and len(devices) == 9
    assert devices.bandwidth_mbit.sum() / 3 == pytest.approx(8.0, rel=1e-3)
    # every process built LeNet at sqrt(0.5) of its width (a mismatch fails the weights'
    # exchange): the second convolution's 16 channels are 11
    assert json.loads((out / "run.json").read_text())["workload"]["width"] == \
        pytest.approx(0.5 ** 0.5)
    profiles = json.loads((out / "profiles.json").read_text())["srv"]
    assert profiles["activation_bytes"][1] == 16 * 11 * 5 * 5 * 4
    act, params = profiles["activation_bytes"][1], sum(profiles["param_bytes"][:2])
    expected = 3 * (5 * act + params)  # each way, per device over the three rounds
    sent = devices.groupby("device")[["bytes_up", "bytes_down"]].sum()
    flows = pd.read_csv(out / "flows.csv")
    for d in ("d1", "d2", "nx1"):
        # the processes' own count: the model's sizes plus labels and message framing
        for way in ("bytes_up", "bytes_down"):
            assert expected <= sent.loc[d, way] <= expected * 1.05 + 3 * 20_000, \
                (d, way, sent.loc[d, way], expected)
        row = flows[flows.device == d].iloc[0]
        assert row.path == f"{d}-r-srv"
        up = dict(h.split(":") for h in row.hop_bytes.split())
        down = dict(h.split(":") for h in row.hop_reverse_bytes.split())
        for node in ("r", "srv"):  # on the wire: the messages plus TCP/IP headers
            assert sent.loc[d, "bytes_up"] <= int(up[node]) <= sent.loc[d, "bytes_up"] * 1.1
            assert sent.loc[d, "bytes_down"] <= int(down[node]) <= \
                sent.loc[d, "bytes_down"] * 1.1
    assert rounds.accuracy.notna().all() and rounds.round_time_measured_s.gt(0).all()


def _train_on_loopback(tmp_path: Path, mode: str, cuts: list[int]) -> list[dict]:
    """The real server and device processes of workloads/split_train.py over loopback (no
    emulated network): LeNet, the same seeds for every mode. The server's trace lines."""
    import socket
    import subprocess

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    run = tmp_path / mode
    run.mkdir()
    devs = [{"name": f"d{i}", "cut": c, "port": free_port()} for i, c in enumerate(cuts)]
    base = {"model": "lenet", "lr": 0.05, "rounds": 2, "batch_size": 16,
            "batches_per_round": 3, "test": {"samples": 64, "seed": 5}}
    cfgs = [{**base, "role": "server", "devices": devs, "server_mode": mode,
             "trace": str(run / "server.jsonl")}]
    cfgs += [{**base, "role": "device", "name": d["name"], "cut": d["cut"], "port": d["port"],
              "server_ip": "127.0.0.1", "seed": i, "trace": str(run / f"{d['name']}.jsonl")}
             for i, d in enumerate(devs)]
    procs, program = [], str(ROOT / "workloads" / "split_train.py")
    try:
        for i, cfg in enumerate(cfgs):
            (run / f"{i}.json").write_text(json.dumps(cfg))
            procs.append(subprocess.Popen(
                [sys.executable, program, str(run / f"{i}.json")],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT / "workloads")}))
            if i == 0:
                assert procs[0].stdout.readline().strip() == "listening"
        for p in procs:
            assert p.wait(timeout=240) == 0, p.stderr.read()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [json.loads(line) for line in (run / "server.jsonl").read_text().splitlines()]


@needs_root
@pytest.mark.emulation
@pytest.mark.slow
def test_per_device_server_share_runs_each_devices_server_part_on_its_own_slice(bring_up,
                                                                                  tmp_path):
    """server_share: per-device: the non-pipe server's process for each device runs in a CPU
    slice of the server of its own (1/M of its quota), the server is profiled on one, so eq.
    4.5's round time is also what the shared playback says; the slices go with the run."""
    from testbed.net import cgroups

    ledger = bring_up("sfs", "nodes: {srv: {cpu: 1.0}, d1: {cpu: 0.5}, d2: {cpu: 0.5}}\n"
                             "links: [{between: [d1, srv], bw: 10}, {between: [d2, srv], bw: 10}]")
    out = _train(ledger, tmp_path, "devices: [d1, d2]\nbatches_per_round: 4\nrounds: 2\n"
                                   "server_share: per-device\n", "--unprivileged")
    server = [json.loads(line) for line in (out / "traces" / "server.jsonl").read_text()
              .splitlines()]
    assert {r["device"]: r["served_in_cgroup"] for r in server} == {
        d: f"/testbed/{ledger.name}/srv/slice.{d}" for d in ("d1", "d2")}
    cpu_dir = cgroups.node_dirs(ledger.names, "srv")[0]
    assert not list(cpu_dir.glob("slice.*"))  # removed at the run's end
    # the server profiled on a 0.5-core slice runs LeNet about as fast as a 0.5-core device
    # (both with every node busy, as the decision saw them)
    prof = json.loads((out / "profiles_decided.json").read_text())
    total = {n: sum(prof[n]["forward_s"]) + sum(prof[n]["backward_s"]) for n in prof}
    assert 0.7 < total["srv"] / total["d1"] < 1.4, total
    devices = pd.read_csv(out / "devices.csv")
    assert np.allclose(devices.round_time_predicted_shared_s, devices.round_time_predicted_s)
    rounds = pd.read_csv(out / "rounds.csv")
    assert (rounds.server_share == "per-device").all()
    # profiled again at the decision's load: each node and slice computing its planned share
    # of the round; the same cuts and bandwidths, predicted on those profiles
    meta = json.loads((out / "run.json").read_text())
    duty = meta["profile_duty"]
    assert set(duty) <= {"d1", "d2", "srv@d1", "srv@d2"} and {"d1", "d2"} <= set(duty)
    assert all(0.02 <= v <= 1.0 for v in duty.values()), duty
    # each device profiled on its planned round: its own blocks per batch with the planned
    # waits between; the blocks past its cut keep their first profile
    pattern = meta["profile_pattern"]
    assert set(pattern) == {"d1", "d2"} & set(duty)
    now = json.loads((out / "profiles.json").read_text())
    for d, pat in pattern.items():
        assert pat["cut"] == meta["decision"]["cuts"][d] and pat["batches"] == 4, pat
        assert pat["batch_wait_s"] >= 0 and pat["round_wait_s"] >= 0, pat
        assert now[d]["forward_s"][pat["cut"]:] == prof[d]["forward_s"][pat["cut"]:]
    assert meta["decided"]["cuts"] == meta["decision"]["cuts"]
    assert meta["decided"]["bandwidth_mbit"] == meta["decision"]["bandwidth_mbit"]
    assert devices.round_time_predicted_s.tolist() == [
        meta["decision"]["round_predicted_s"][d] for d in devices.device]
    print(devices[["device", "round", "round_time_measured_s", "round_time_predicted_s",
                   "server_compute_s", "server_compute_predicted_s"]])


def test_per_device_server_share_needs_the_nonpipe_server(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(LENET.read_text() + "server_mode: splitpipe-bf\nserver_share: per-device\n")
    with pytest.raises(InputError, match="server_share: per-device .* fix: use server_mode: "
                                         "split-nonpipe") as e:
        api.schedule(TOPO, path, "edgesplit")
    assert str(path) in str(e.value)


def test_a_per_device_server_share_is_priced_at_one_mth_of_the_server(tmp_path):
    """Offline, the server's part for each device runs at 1/M of the server's speed."""
    shared, sliced = tmp_path / "shared.yaml", tmp_path / "sliced.yaml"
    shared.write_text(LENET.read_text())
    sliced.write_text(LENET.read_text() + "server_share: per-device\n")
    a, b = (api.schedule(TOPO, f, "edgesplit-fix").extension for f in (shared, sliced))
    m = len(a.cuts)
    for d in a.cuts:
        assert b.server_compute_predicted_s[d] == pytest.approx(
            m * a.server_compute_predicted_s[d], rel=1e-6)
        assert b.round_shared_predicted_s[d] == pytest.approx(b.round_predicted_s[d])


def test_the_splitpipe_stages_train_exactly_what_separate_parts_train(tmp_path):
    """SplitPipe-BF's pipeline (stages at the distinct cuts 1, 2, 3; a device's batch enters at
    its cut) computes the same gradients as a part per device: after two rounds the averaged
    model's test loss is the same to float precision. RW holds one part at a time: the least
    active memory."""
    cuts = [1, 2, 1, 3]
    runs = {m: _train_on_loopback(tmp_path, m, cuts)
            for m in ("split-nonpipe", "splitpipe-bf", "splitpipe-rw")}
    final = {m: [r for r in rows if r["round"] == 1][0] for m, rows in runs.items()}
    assert final["splitpipe-bf"]["loss"] == pytest.approx(final["split-nonpipe"]["loss"],
                                                          rel=1e-5)
    assert final["splitpipe-rw"]["loss"] == pytest.approx(final["split-nonpipe"]["loss"],
                                                          rel=1e-5)
    active = {m: max(r["active_peak_mb"] for r in rows) for m, rows in runs.items()}
    assert active["splitpipe-rw"] < active["splitpipe-bf"] and \
        active["splitpipe-rw"] < active["split-nonpipe"], active
    assert all(r["server_compute_s"] > 0 for rows in runs.values() for r in rows)
    # non-pipe: a process per device (the thesis's separate copies); SplitPipe: one process
    pids = {m: {r["device"]: r["served_by_pid"] for r in rows} for m, rows in runs.items()}
    assert len(set(pids["split-nonpipe"].values())) == len(cuts), pids
    assert len(set(pids["splitpipe-bf"].values())) == 1, pids


def test_the_nonpipe_servers_processes_die_with_it(tmp_path):
    """SIGKILL of the server leaves none of its per-device processes behind."""
    import signal
    import socket
    import subprocess

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    cfg = {"role": "server", "model": "lenet", "lr": 0.05, "rounds": 1, "batch_size": 4,
           "batches_per_round": 1, "server_mode": "split-nonpipe",
           "devices": [{"name": f"d{i}", "cut": 1, "port": p} for i, p in enumerate(ports)],
           "test": {"samples": 8, "seed": 1}, "trace": str(tmp_path / "server.jsonl")}
    (tmp_path / "s.json").write_text(json.dumps(cfg))
    server = subprocess.Popen([sys.executable, str(ROOT / "workloads" / "split_train.py"),
                               str(tmp_path / "s.json")], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT / "workloads")})
    socks = []
    try:
        assert server.stdout.readline().strip() == "listening"
        socks = [socket.create_connection(("127.0.0.1", p)) for p in ports]
        children_file = Path(f"/proc/{server.pid}/task/{server.pid}/children")
        end, workers = time.monotonic() + 30, []
        while time.monotonic() < end and len(workers) < 2:
            workers = children_file.read_text().split()
            time.sleep(0.05)
        assert len(workers) == 2, workers
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        end = time.monotonic() + 10
        while time.monotonic() < end and any(Path(f"/proc/{w}").exists() for w in workers):
            time.sleep(0.05)
        assert not any(Path(f"/proc/{w}").exists() for w in workers), workers
    finally:
        for s in socks:
            s.close()
        if server.poll() is None:
            server.kill()


def test_active_memory_counts_saved_activations_not_the_shared_parameters():
    """The non-pipe server moves its parts' weights into shared memory; autograd saves those
    weights for the backward pass, and active memory must still count them once, as held
    parameters, and count only the saved input on top."""
    sys.path.insert(0, str(ROOT / "workloads"))
    import torch
    from split_train import ActiveMemory, shared_memory

    layer = torch.nn.Linear(64, 32)
    shared_memory([layer])
    params = [*layer.parameters()]
    held = sum(p.numel() * 4 for p in params)
    memory = ActiveMemory(params, held)
    x = torch.randn(8, 64)
    with memory.hooks():
        out = layer(x).sum()
    assert memory.peak == held + x.numel() * 4
    out.backward()
    del out
    memory.reset_peak()
    assert memory.peak == held  # the saved input is released with the graph
