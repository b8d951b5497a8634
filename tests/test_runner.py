"""`testbed run`: Plans enforced and executed as real processes exchanging real bytes, traced
end to end, with measured beside predicted."""

import json
import threading
from pathlib import Path

import pandas as pd
import pytest
import yaml

from testbed.experiment.options import RunOptions
from testbed.kinds import run
from testbed.kinds.streams.executor import Streams as Runner
from testbed.schedulers.jobs import load_jobs
from testbed.topology.model import Topology
from tests.conftest import ROOT, cli, needs_root, wait_for

pytestmark = [needs_root, pytest.mark.emulation]

CHAIN = """
jobs:
  - name: chain
    source: a
    input: 50kB
    duration: 10s
    tasks:
      work: {work: 0.01, memory: 64MB, node: b}
"""


@pytest.mark.slow
def test_two_task_job_across_a_2_mbit_link(bring_up, tmp_path):
    ledger = bring_up("chain", "nodes: {a: {cpu: 0.5}, b: {cpu: 0.5}}\n"
                               "links: [{between: [a, b], bw: 2}]")
    (tmp_path / "jobs.yaml").write_text(CHAIN)
    res = cli("run", str(tmp_path / "jobs.yaml"), "--name", ledger.name, "--scheduler",
              "otfs", "--out", str(tmp_path / "run"))
    assert res.returncode == 0, res.stdout + res.stderr
    out = tmp_path / "run"
    jobs = pd.read_csv(out / "jobs.csv")
    (job,) = jobs.itertuples()
    # what the link allows: its TCP goodput over 50 kB items (+16 bytes of framing each)
    allowed = 2e6 * 1448 / 1514 / 8 / 50_016
    assert abs(job.throughput_measured_items_s - allowed) / allowed < 0.10, job
    assert abs(job.throughput_predicted_items_s - allowed) / allowed < 0.02, job
    assert job.status == "done" and job.items_done == job.items_emitted > 20
    # the per-hop timestamps add up to the end-to-end latency, item by item
    events = pd.read_csv(out / "events.csv")
    items = pd.read_csv(out / "items.csv").set_index("item")
    for item, ev in events[events.item.isin(items.index)].groupby("item"):
        t = {(r.task, r.event): r.ts_ns for r in ev.itertuples()}
        parts = [t[("source", "sent")] - t[("source", "emit")],  # handed to TCP
                 t[("work", "recv")] - t[("source", "sent")],  # crossing the link
                 t[("work", "start")] - t[("work", "recv")],  # waiting for the CPU
                 t[("work", "end")] - t[("work", "start")],  # computing
                 t[("source", "done")] - t[("work", "end")]]  # acknowledgement back
        assert all(p >= 0 for p in parts), (item, parts)
        assert sum(parts) / 1e6 == pytest.approx(items.loc[item, "latency_ms"], abs=1e-3)
    hops = pd.read_csv(out / "hops.csv")
    assert (hops.transfer_ms > 0).all() and len(hops) == job.items_done
    # the flow was enforced along a-b and carried every item's bytes
    flows = pd.read_csv(out / "flows.csv")
    (flow,) = flows.itertuples()  # one flow, installed once
    assert flow.path == "a-b" and flow.rate_mbit_line == pytest.approx(2.0, rel=1e-3)
    carried = {h.split(":")[0]: int(h.split(":")[1]) for h in flow.hop_bytes.split()}
    # Open vSwitch's userspace datapath adds its packet counts to the OpenFlow counters every
    # ~0.5 s, so a flow removed at once can miss the last packets (48 items of 50 kB counted
    # 2,396,978 bytes once in CI)
    assert min(carried.values()) >= job.items_done * 50_000 * 0.98
    meta = (out / "run.json").read_text()
    assert '"scheduler": "otfs"' in meta and "node_speeds_gops" in meta
    assert {"links.csv", "nodes.csv", "tasks.csv"} <= {p.name for p in out.iterdir()}
    # the machine's speed beside the profile's, every second of the run (two 0.5-core nodes
    # on this machine's cores: a 2x slower machine would be a fault of this test's set-up)
    host = pd.read_csv(out / "host.csv")
    assert (host.phase == "run").sum() >= 5 and host.t_s.is_monotonic_increasing
    assert host.steal_share.between(0, 1).all() and host.busy_share.between(0, 1).all()
    # and while the nodes were profiled, before the run's clock started
    setup = host[host.phase == "setup"]
    assert len(setup) >= 1 and (setup.t_s < 0).all() and (host[host.phase == "run"].t_s >= 0).all()
    summary = json.loads(meta)["host_speed"]
    assert 0.5 < summary["speed_vs_start_median"] < 2, summary
    assert summary["spin_run_over_setup"] == pytest.approx(
        summary["spin_per_cpu_s_mean"] / summary["spin_per_cpu_s_setup_mean"], rel=1e-3)


MESH6 = """
defaults: {link: {bw: 5}}
nodes:
  n1: {cpu: 0.3}
  n2: {cpu: 0.3}
  n3: {cpu: 0.3}
  n4: {cpu: 0.3}
  n5: {cpu: 0.3}
  n6: {cpu: 0.3}
links:
  - {between: [n1, n2]}
  - {between: [n2, n3]}
  - {between: [n3, n4]}
  - {between: [n4, n5]}
  - {between: [n5, n6]}
  - {between: [n6, n1]}
  - {between: [n1, n4], bw: 2}
  - {between: [n2, n5], bw: 8}
"""


def reduced_attr_jobs(path: Path, copies: int = 2) -> Path:
    """The shipped attribute-recognition job at reduced frame size for a 2-core machine."""
    spec = yaml.safe_load((ROOT / "workloads" / "attr-recognition.yaml").read_text())
    spec["repeat"] = copies
    spec["arrivals"] = {"poisson_rate": 1.0, "seed": 3}
    spec["scale"] = {"data": 0.01, "work": 0.01}
    spec["jobs"][0]["duration"] = "8s"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
def test_attribute_recognition_job_on_a_mesh(bring_up, tmp_path):
    """The shipped job on a 6-node mesh under OTFA (LR runs emulated in the campaign tests:
    test_campaign.py, test_cluster.py)."""
    ledger = bring_up("attr-otfa", MESH6)
    jobs_file = reduced_attr_jobs(tmp_path / "jobs.yaml")
    jobs = run(ledger.name, jobs_file, RunOptions(scheduler="otfa", out_dir=tmp_path / "r",
                                                    seed=3))
    assert list(jobs.status) == ["done", "done"], jobs[["job", "status", "reason"]]
    assert (jobs.items_done == jobs.items_emitted).all() and (jobs.items_done > 3).all()
    items = pd.read_csv(tmp_path / "r" / "items.csv")
    assert (items.status == "done").all()  # every item accounted for
    flows = pd.read_csv(tmp_path / "r" / "flows.csv")
    assert len(flows) > 0
    for f in flows.itertuples():  # each installation: counters on exactly its path's switches
        carried = [int(h.split(":")[1]) for h in f.hop_bytes.split()]
        assert [h.split(":")[0] for h in f.hop_bytes.split()] == f.path.split("-")
        assert max(carried) - min(carried) <= 0.02 * max(carried) + 3000, f  # same bytes
    # and, over a flow's installations, every item's bytes crossed its planned paths
    done = jobs.set_index("job").items_done
    for (job, src, dst), group in flows.groupby(["job", "src_task", "dst_task"], dropna=False):
        moved = sum(min(int(h.split(":")[1]) for h in hb.split()) for hb in group.hop_bytes)
        assert moved >= done[job] * group.volume_bytes.iloc[0], (job, src, dst)


@pytest.mark.slow
def test_a_killed_task_fails_its_job_and_the_others_finish(bring_up, tmp_path):
    ledger = bring_up("kill", "nodes: {a: {cpu: 0.4}, b: {cpu: 0.4}, c: {cpu: 0.4}}\n"
                              "links: [{between: [a, b], bw: 10}, {between: [b, c], bw: 10}]")
    (tmp_path / "jobs.yaml").write_text("""
jobs:
  - {name: victim, source: a, input: 20kB, duration: 8s,
     tasks: {t: {work: 0.01, memory: 64MB, node: b}}}
  - {name: survivor, source: c, input: 20kB, duration: 8s,
     tasks: {t: {work: 0.01, memory: 64MB, node: b}}}
""")
    topo = Topology.from_dict(ledger.topology)
    jobs = list(load_jobs(tmp_path / "jobs.yaml", topo).jobs)
    runner = Runner(ledger, jobs, RunOptions(scheduler="otfa", out_dir=tmp_path / "r"))
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("jobs", runner.run()))
    thread.start()
    wait_for(lambda: "t" in getattr(runner.runs.get("victim"), "processes", {}), 30,
             "the victim's task process")
    traces = tmp_path / "r" / "traces"
    wait_for(lambda: any(f.stat().st_size for f in traces.glob("victim*")), 30,
             "the victim's items flowing (mid-run)")
    runner.runs["victim"].processes["t"].kill()
    thread.join(timeout=60)
    jobs_df = result["jobs"].set_index("job")
    assert jobs_df.loc["victim", "status"] == "failed"
    assert "task t exited with code -9" in jobs_df.loc["victim", "reason"]
    assert jobs_df.loc["survivor", "status"] == "done"
    assert jobs_df.loc["survivor", "items_done"] == jobs_df.loc["survivor", "items_emitted"]


@pytest.mark.slow
def test_torch_compute_runs_real_models(bring_up, tmp_path):
    """ResNet-18 (random weights) at 64x64 on a half-core node: 3.64 x (64/224)^2 = 0.30 GOP."""
    ledger = bring_up("torch", "nodes: {a: {cpu: 0.5}, b: {cpu: 0.5}}\n"
                               "links: [{between: [a, b], bw: 10}]")
    (tmp_path / "jobs.yaml").write_text("""
jobs:
  - name: cnn
    source: a
    input: 49152B     # one 64x64x3 float32 image
    duration: 8s
    tasks:
      classify: {work: 0.30, memory: 256MB, model: resnet18, node: b}
""")
    jobs = run(ledger.name, tmp_path / "jobs.yaml", RunOptions(
        scheduler="otfa", out_dir=tmp_path / "r", compute="torch", resolution=64))
    (job,) = jobs.itertuples()
    assert job.status == "done" and job.compute == "torch" and job.items_done > 5, job
    tasks = pd.read_csv(tmp_path / "r" / "tasks.csv")
    compute_ms = tasks[tasks.task == "classify"].compute_ms.median()
    assert compute_ms > 5  # a real forward pass, not a no-op
    print(f"torch: measured {job.throughput_measured_items_s:.2f} items/s, predicted "
          f"{job.throughput_predicted_items_s:.2f}, forward {compute_ms:.1f} ms")
    assert 0.5 < job.fidelity < 2.0
