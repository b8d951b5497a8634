"""Root-free unit tests of the pure parts the emulation tests exercise only end to end: flow
wiring, trace tables, sweep expansion and the tc scripts run on devices."""

import json

import pandas as pd
import pytest

from testbed.campaign.sweep import CampaignFile, expand
from testbed.devices.attach import flow_rates_script, parse_classes, remove_flow_rates_script
from testbed.htb import htb_params
from testbed.runner import traces
from testbed.runner.wiring import Ports, line_rate_mbit, tc_rate_mbit, wire
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
