"""`testbed run` of a requests workload: real services and clients on the nodes, real request
bytes over shaped links, every period dispatched by the policy, measured beside predicted."""

import json
import os
import signal
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import cli, needs_root

pytestmark = [needs_root, pytest.mark.emulation]

TOPOLOGY = """
nodes: {a: {cpu: 0.3}, b: {cpu: 0.2}, c: {cpu: 0.2}}
links: [{between: [a, b], bw: 20}, {between: [b, c], bw: 10}, {between: [a, c], bw: 10}]
"""

REQUESTS = """
kind: requests
service: {name: classify, work: {per_mb: 3, base: 0.1}}
edges: "*"
replicas: {a: 2, b: 1, c: 1}
period: 2s
arrivals: {per_period: 8, seed: 1}
size: {uniform: [100kB, 400kB]}
duration: 6s
"""


@pytest.mark.slow
def test_requests_are_dispatched_moved_and_answered(bring_up, tmp_path):
    ledger = bring_up("rq", TOPOLOGY)
    (tmp_path / "r.yaml").write_text(REQUESTS)
    out = tmp_path / "run"
    res = cli("run", str(tmp_path / "r.yaml"), "--name", ledger.name, "--scheduler",
              "greedy-ect", "--out", str(out), timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    reqs = pd.read_csv(out / "requests.csv")
    periods = pd.read_csv(out / "periods.csv")
    assert len(reqs) == 24 and (reqs.status == "done").all(), reqs[reqs.status != "done"]
    assert list(periods.period) == [0, 1, 2] and (periods.status == "done").all()
    # every request's life is in order, and its measured time is made of its parts
    assert (reqs.response_time_measured_s > 0).all()
    assert (reqs.compute_s > 0).all() and (reqs.wait_s >= -0.01).all()
    assert (reqs.transfer_s + reqs.wait_s + reqs.compute_s
            <= reqs.response_time_measured_s + 0.05).all()
    moved = reqs[reqs.edge != reqs.source]
    assert len(moved) > 0 and (moved.transfer_s > 0).all()
    # each moved request crossed the network: at least its bytes at the link's rate
    assert (moved.transfer_s >= moved.size_bytes * 8 / 20e6 * 0.9).all()
    # the prediction is the policy's model, and the two are of the same size
    assert periods.makespan_predicted_s.gt(0).all()
    assert periods.fidelity.between(0.5, 3).all(), periods
    decisions = sorted((out / "decisions").iterdir())
    assert len(decisions) == 3
    plan = json.loads(decisions[0].read_text())
    assert plan["kind"] == "requests" and len(plan["placements"]) == 8
    meta = json.loads((out / "run.json").read_text())
    assert meta["kind"] == "requests" and set(meta["edge_model"]["slope_s_per_mb"]) == \
        {"a", "b", "c"}
    profile = pd.read_csv(out / "service_profile.csv")
    assert set(profile.edge) == {"a", "b", "c"} and (profile.seconds > 0).all()


@pytest.mark.slow
def test_a_service_that_dies_fails_its_requests_with_the_reason(bring_up, tmp_path):
    """Requests sent to an edge whose service is gone fail with a reason; the run ends."""
    ledger = bring_up("rqk", TOPOLOGY)
    (tmp_path / "r.yaml").write_text(REQUESTS.replace("duration: 6s", "duration: 2s")
                                     .replace('edges: "*"', "edges: [a, b]")
                                     .replace("replicas: {a: 2, b: 1, c: 1}",
                                              "replicas: {a: 1, b: 1}"))
    import threading

    from testbed import api

    out = tmp_path / "run"
    opts = api.RunOptions(scheduler="local", out_dir=out)
    result = {}

    def run() -> None:
        result["df"] = api.experiment(ledger.name, tmp_path / "r.yaml", opts)

    th = threading.Thread(target=run)
    th.start()
    from tests.conftest import wait_for

    wait_for(lambda: (out / "configs" / "service.b.json").exists(), 120, "the services")
    wait_for(lambda: (out / "decisions").exists() and any((out / "decisions").iterdir()),
             120, "the first decision")
    os.kill(_pid_running(out / "configs" / "service.b.json"), signal.SIGKILL)
    th.join(timeout=300)
    periods = result["df"]
    reqs = pd.read_csv(out / "requests.csv")
    failed = reqs[reqs.status == "failed"]
    assert len(failed) > 0 and (periods.status == "failed").all(), reqs
    assert set(failed.edge) == {"b"}
    assert all(r for r in failed.reason), failed.reason.tolist()
    assert (reqs[reqs.edge == "a"].status == "done").all()


def _pid_running(config: Path) -> int:
    """The id of the process this test's run started with `config` (its unique argument)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(config).encode() in argv and b"python" in argv[0].split(b"/")[-1]:
                return int(proc.name)
    raise AssertionError(f"no process runs {config}")
