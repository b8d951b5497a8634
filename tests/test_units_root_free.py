"""Root-free unit tests of the pure parts the emulation tests exercise only end to end: flow
wiring, trace tables, sweep expansion and the tc scripts run on devices."""

import json
import subprocess
import sys
import time

import pandas as pd
import pytest

from testbed.campaign.sweep import CampaignFile, expand
from testbed.devices.attach import flow_rates_script, parse_classes, remove_flow_rates_script
from testbed.experiment.processes import _next_line
from testbed.htb import htb_params
from testbed.kinds.streams import traces
from testbed.kinds.streams.wiring import Ports, line_rate_mbit, tc_rate_mbit, wire
from testbed.schedulers import get
from testbed.schedulers.jobs import loads_jobs
from testbed.schedulers.network import NetworkView
from testbed.schedulers.plan import Plan
from testbed.topology import loads

TOPO = """
nodes: {a: {cpu: 1}, b: {cpu: 1}, c: {cpu: 1}}
links: [{between: [a, b], bw: 4}, {between: [b, c], bw: 2}]
"""
JOBS = """
jobs:
  - name: j
    source: a
    input: 20kB
    tasks:
      t1: {work: 0.5, memory: 64MB, node: b}
      t2: {work: 0.5, memory: 64MB, node: c, after: {t1: 5kB}}
"""


def _wired(scheduler: str = "otfs"):
    topo = loads(TOPO)
    job = loads_jobs(JOBS, "jobs.yaml", topo).jobs[0]
    plan = get(scheduler)(NetworkView.from_topology(topo), Plan(scheduler), [job], 0.0)
    ips = {n.name: n.ip for n in topo.nodes}
    options = {"compute": "synthetic", "duration_s": 5.0, "gops_per_core": 20.0,
               "spin_per_s": 1e6, "trace_dir": "/x", "line_bw": {frozenset(("a", "b")): 4.0,
                                                                  frozenset(("b", "c")): 2.0},
               "drain_s": 3.0}
    return job, plan, wire(job, plan, ips, Ports(), options)


def test_wiring_connects_every_edge_of_the_dag_on_planned_paths():
    job, plan, w = _wired()
    procs = {p.task: p for p in w.processes}
    assert [p.task for p in w.processes][-1] == "source"  # upstream starts last
    assert procs["t1"].node == "b" and procs["t2"].node == "c" and procs["source"].node == "a"
    src = procs["source"].config
    assert src["drain_s"] == 3.0 and src["duration_s"] == 5.0
    (out,) = src["outputs"]
    assert out["to"] == "t1" and out["port"] == procs["t1"].config["port"]
    assert procs["t1"].config["outputs"][0]["port"] == procs["t2"].config["port"]
    # one enforced flow per DAG edge that crosses the network, on the plan's path
    assert {(f.src, f.dst): s.path for f, s in w.flows} == {("a", "b"): ("a", "b"),
                                                            ("b", "c"): ("b", "c")}
    ports = [s.sport for _, s in w.flows] + [s.dport for _, s in w.flows]
    assert len(set(ports)) == len(ports)  # every 5-tuple distinct
    for f, s in w.flows:
        assert s.rate_mbit <= {("a", "b"): 4.0, ("b", "c"): 2.0}[(f.src, f.dst)] + 1e-9


def test_line_rate_covers_framing():
    assert line_rate_mbit(1.0, 1448 * 100) == pytest.approx(1514 / 1448, rel=0.02)
    assert line_rate_mbit(1.0, 10) > 5  # tiny messages cost far more on the wire
    assert tc_rate_mbit(100.0, 50_000, ("a", "b"), {frozenset(("a", "b")): 4.0}) == 4.0


def _events(rows):
    df = pd.DataFrame(rows, columns=["task", "ts_ns", "item", "event", "peer", "bytes"])
    df.insert(0, "job", "j")
    return df


def test_trace_tables_from_events():
    ms = 1_000_000
    rows = []
    for i in range(5):
        t = i * 100 * ms
        rows += [("source", t, i, "emit", "", 0), ("source", t + 1 * ms, i, "sent", "t1", 20000),
                 ("t1", t + 5 * ms, i, "recv", "source", 20000),
                 ("t1", t + 6 * ms, i, "start", "", 0), ("t1", t + 16 * ms, i, "end", "", 0),
                 ("source", t + 20 * ms, i, "done", "", 0)]
    rows.append(("source", 600 * ms, 5, "emit", "", 0))  # emitted, never completed
    events = _events(rows)
    items = traces.items_table(events)
    assert len(items) == 6 and (items.status == "done").sum() == 5
    assert items.latency_ms.dropna().tolist() == [20.0] * 5
    hops = traces.hops_table(events)
    assert hops.transfer_ms.tolist() == [4.0] * 5
    m = traces.measured(items, warmup_items=1)
    assert m["items_done"] == 5 and m["items_emitted"] == 6
    assert m["throughput_measured_items_s"] == pytest.approx(10.0)  # one item per 100 ms
    assert m["latency_ms_p50"] == 20.0


def test_sweep_expansion_seeds_paths_and_identity():
    spec = CampaignFile(name="x", topology={}, jobs="j.yaml", repetitions=2, seed=10,
                        grid={"scheduler": ["otfa", "tp"],
                              "topology.generate.random_mesh.bw_mean": [1, 5]})
    topo = {"generate": {"random_mesh": {"nodes": 5, "degree": 2}}}
    jobs = {"jobs": [], "arrivals": {"poisson_rate": 1, "seed": 0}}
    trials = expand(spec, topo, jobs)
    assert len(trials) == 8 and len({t.id for t in trials}) == 8
    t = trials[0]
    assert t.topology["generate"]["random_mesh"]["seed"] == 10 == t.jobs["arrivals"]["seed"]
    assert {tr.seed for tr in trials} == {10, 11}
    assert {tr.topology["generate"]["random_mesh"]["bw_mean"] for tr in trials} == {1, 5}
    assert topo["generate"]["random_mesh"] == {"nodes": 5, "degree": 2}  # base untouched
    # the id covers every resolved setting: a non-grid change gives new ids
    again = expand(spec, topo, jobs)
    assert [x.id for x in again] == [x.id for x in trials]
    changed = expand(spec.model_copy(update={"compute": "torch"}), topo, jobs)
    assert not {x.id for x in changed} & {x.id for x in trials}


def test_device_tc_scripts_use_the_shared_htb_parameters():
    keys = ["0x00060000/0x00ff0000+8", "0x0a000001/0xffffffff+12"]
    script = flow_rates_script("t1d0", "sudo -n ", [(0x105, 6, 2.5, keys)])
    p = htb_params(2.5)
    assert f"classid 1:105 htb rate {p.rate_bps}bit ceil {p.rate_bps}bit burst " \
           f"{p.burst_bytes} cburst {p.burst_bytes} quantum {p.quantum_bytes}" in script
    assert "match u32 0x0a000001 0xffffffff at 12" in script and "flowid 1:105" in script
    assert script.startswith("set -e") and "sudo -n tc" in script
    undo = remove_flow_rates_script("t1d0", "", [(0x105, 6)])
    assert "tc filter del dev t1d0 parent 1: prio 6" in undo and "classid 1:105" in undo


def test_device_read_back_parses_tc_json():
    classes = ("class htb 1:1 root leaf 10: prio 0 rate 10Mbit ceil 10Mbit burst 15Kb\n"
               "class htb 1:105 root prio 0 rate 2500Kbit ceil 2500Kbit burst 3028b\n")
    filters = [{"protocol": "ip", "pref": 6, "kind": "u32", "options": {"fh": "800::800",
                                                                        "flowid": "1:105"}},
               {"protocol": "ip", "pref": 6, "kind": "u32", "options": {"fh": "800:"}}]
    rates, targets = parse_classes(classes + "---\n" + json.dumps(filters) + "\n")
    assert rates == {1: 10_000_000, 0x105: 2_500_000}
    assert targets == {0x105}


# ---- one shape for node kinds and workload kinds ------------------------------------------
def test_every_node_kind_is_registered_and_unknown_kinds_are_named():
    from testbed import nodes
    from testbed.errors import InputError

    assert list(nodes.KINDS) == ["host", "docker", "device"]
    assert [k.local for k in nodes.KINDS.values()] == [True, True, False]
    assert {k.plural for k in nodes.KINDS.values()} == {"hosts", "containers", "devices"}
    with pytest.raises(InputError, match="unknown node kind 'vm'; known: host, docker, device"):
        nodes.of("vm")


def test_build_groups_nodes_by_registered_kind_in_build_order():
    from testbed.build import by_kind

    topo = loads("nodes: {c: {kind: docker}, a: {}, d: {kind: device, ssh: {host: 10.9.0.1}}}\n"
                 "links: [{between: [a, c]}, {between: [a, d]}]")
    groups = by_kind(topo)
    assert list(groups) == ["host", "docker", "device"]
    assert {k: [n.name for n in v] for k, v in groups.items()} == {
        "host": ["a"], "docker": ["c"], "device": ["d"]}


def test_a_workload_file_names_its_kind_and_unknown_or_unbuilt_kinds_are_refused(tmp_path):
    from testbed.errors import InputError
    from testbed.kinds import KINDS, kind_of

    assert kind_of("w.yaml", JOBS).name == "streams"  # no kind: a streams file
    assert kind_of("w.yaml", "kind: streams\n" + JOBS).executor.kind == "streams"
    assert kind_of("w.yaml", "kind: requests\n").executor.kind == "requests"
    assert kind_of("w.yaml", "kind: training\n").executor.kind == "training"
    assert kind_of("w.yaml", "kind: video\n").executor.kind == "video"
    with pytest.raises(InputError, match="kind: 'nonsense' is not a workload kind.*fix: use one "
                                         "of streams, training, requests"):
        kind_of("w.yaml", "kind: nonsense\n")
    assert set(KINDS) == {"streams", "requests", "training", "video"}
    topo = loads(TOPO)  # the streams model accepts its own kind line
    assert len(loads_jobs("kind: streams\n" + JOBS, "w.yaml", topo).jobs) == 1


def test_a_scheduler_of_another_workload_kind_is_refused():
    from testbed.errors import InputError
    from testbed.schedulers import REGISTRY

    assert {e.kind for e in REGISTRY.values()} == {"streams", "requests", "training", "video"}
    assert get("otfa", "streams") is REGISTRY["otfa"].fn
    assert get("ilp:50ms", "requests") is REGISTRY["ilp"].fn  # the argument is the policy's
    with pytest.raises(InputError, match="takes no argument"):
        get("otfa:3", "streams")
    with pytest.raises(InputError, match="plans requests workloads, not streams"):
        get("corais", "streams")
    with pytest.raises(InputError, match="plans streams workloads, not training"):
        get("otfa", "training")


def test_a_plan_extension_of_a_kind_round_trips_typed_through_json():
    from dataclasses import dataclass

    from testbed.schedulers.plan import EXTENSIONS, register_extension

    @dataclass(frozen=True)
    class Cut:
        cut_layer: dict
        bandwidth_mbit: dict

        @classmethod
        def from_dict(cls, d: dict) -> "Cut":
            return cls(**d)

    register_extension("toy", Cut)
    try:
        plan = Plan("toy-scheduler", kind="toy",
                    extension=Cut({"d1": 3, "d2": 5}, {"d1": 10.0, "d2": 20.0}))
        back = Plan.from_json(plan.to_json())
        assert back == plan and isinstance(back.extension, Cut)
        assert json.loads(plan.to_json())["extension"]["cut_layer"] == {"d1": 3, "d2": 5}
        old = Plan.from_dict({k: v for k, v in Plan("otfa").to_dict().items()
                              if k not in ("kind", "extension")})  # written before kinds
        assert old.kind == "streams" and old.extension is None
    finally:
        EXTENSIONS.pop("toy")



def test_one_size_convention_and_wheels_for_the_images_python():
    """1MB is 10^6 bytes wherever a size is written (cgroups, containers, the schema); the
    image's wheels are chosen for its own Python, not the host's."""
    from testbed.images import pip_target_options
    from testbed.net.cgroups import MB
    from testbed.units import parse_size_bytes

    assert MB == 10**6 and parse_size_bytes("1GB") == 10**9
    assert parse_size_bytes("1GiB") == 2**30
    opts = pip_target_options("3.12", "2.39", "aarch64")
    assert opts[:6] == ["--python-version", "3.12", "--implementation", "cp", "--abi", "cp312"]
    platforms = [opts[i + 1] for i, o in enumerate(opts) if o == "--platform"]
    assert platforms[0] == "manylinux_2_39_aarch64" and "manylinux_2_17_aarch64" in platforms
    assert "manylinux_2_40_aarch64" not in platforms and "linux_aarch64" in platforms


def test_lines_written_together_are_read_one_by_one():
    """A profile taken together says "ready" and then its answer; both may arrive in one read
    of the pipe (a board's relay passes them on as they come): neither is lost."""
    proc = subprocess.Popen([sys.executable, "-c", "print('ready\\nanswer', flush=True)"],
                            stdout=subprocess.PIPE)
    kept: dict[int, bytes] = {}
    deadline = time.monotonic() + 30
    try:
        assert _next_line(proc, deadline, kept) == "ready"
        assert _next_line(proc, deadline, kept) == "answer"
        assert _next_line(proc, deadline, kept) == ""  # ended without another line
    finally:
        proc.wait(timeout=10)
