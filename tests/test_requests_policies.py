"""The requests kind without a network: the dispatch model (CoRaiS eqs. 5-9), the ILP checked
against brute force, the baselines, the learned policy's output, and requests files."""

import itertools
import json
import re

import numpy as np
import pytest

from testbed import api
from testbed.errors import InputError
from testbed.kinds.requests.instance import (
    Instance,
    edge_times,
    generate,
    makespan,
    request_times,
)
from testbed.kinds.requests.policies import decide, policy
from tests.conftest import ROOT, cli


def brute_force(inst: Instance) -> float:
    every = np.array(list(itertools.product(range(inst.edges), repeat=inst.requests)))
    return float(makespan(inst, every).min())


@pytest.mark.parametrize("seed", range(8))
def test_ilp_finds_the_brute_force_optimum(seed):
    inst = generate(3, 6, np.random.default_rng(seed))  # 729 dispatches, with backlogs
    d, _ = decide("ilp:10s", inst)
    assert d.optimal
    assert makespan(inst, d.edge) == pytest.approx(brute_force(inst), rel=1e-6)


def test_model_by_hand_on_two_edges():
    """T_q = max(local work, incoming transfers) + transferred work (eq. 9), by hand."""
    inst = Instance(slope=np.array([1.0, 2.0]), intercept=np.array([0.0, 0.5]),
                    replicas=np.array([1, 2]), transfer=np.array([[0, 3.0], [3.0, 0]]),
                    backlog_local_s=np.array([0.5, 0.0]), backlog_transfer_s=np.zeros(2),
                    backlog_in_s=np.array([0.0, 0.25]), source=np.array([0, 0, 1]),
                    size=np.array([1.0, 0.5, 1.0]))
    # r0 stays on e0 (1 s), r1 goes to e1 (transfer 1.5 s, compute (1 + 0.5) / 2 = 0.75 s),
    # r2 stays on e1 ((2 + 0.5) / 2 = 1.25 s)
    t = edge_times(inst, np.array([0, 1, 1]))
    assert t[0] == pytest.approx(0.5 + 1.0)
    assert t[1] == pytest.approx(max(1.25, 1.5) + 0.25 + 0.75)
    per_request = request_times(inst, np.array([0, 1, 1]))
    assert per_request == pytest.approx([1.5, 2.5, 1.25])


def test_batched_and_single_makespans_agree():
    inst = generate(6, 40, np.random.default_rng(1))
    batch = np.random.default_rng(2).integers(0, 6, size=(50, 40))
    assert makespan(inst, batch) == pytest.approx([makespan(inst, d) for d in batch])


@pytest.mark.parametrize("spec", ["local", "random:50", "greedy-ect", "ilp:1s"])
def test_every_policy_gives_each_request_one_edge(spec):
    inst = generate(5, 50, np.random.default_rng(3))
    d, took = decide(spec, inst, seed=4)
    assert d.edge.shape == (50,) and d.edge.min() >= 0 and d.edge.max() < 5
    assert took >= 0
    if spec == "local":
        assert (d.edge == inst.source).all()


def test_more_tries_never_hurt_and_the_seed_repeats():
    inst = generate(5, 50, np.random.default_rng(5))
    one, _ = decide("random:1", inst, seed=7)
    many, _ = decide("random:200", inst, seed=7)
    again, _ = decide("random:200", inst, seed=7)
    assert makespan(inst, many.edge) <= makespan(inst, one.edge)
    assert (many.edge == again.edge).all()


def test_ilp_beats_or_equals_the_heuristics():
    for seed in range(3):
        inst = generate(5, 30, np.random.default_rng(seed))
        best = makespan(inst, decide("ilp:5s", inst)[0].edge)
        for spec in ("local", "greedy-ect", "random:100"):
            assert best <= makespan(inst, decide(spec, inst)[0].edge) + 1e-9


@pytest.mark.parametrize("spec,fix", [("nope", "choose one of"), ("random:x", "random:100"),
                                      ("ilp:abc", "ilp:abc"), ("corais:bogus=1", "sample=N")])
def test_bad_policy_names_are_clear(spec, fix):
    inst = generate(3, 4, np.random.default_rng(0))
    with pytest.raises(InputError, match=fix):
        fn, arg = policy(spec)
        fn(inst, np.random.default_rng(0), arg)


def test_the_shipped_corais_policy_dispatches_validly_and_sampling_helps():
    inst = generate(10, 100, np.random.default_rng(11))
    greedy, took = decide("corais", inst)
    again, _ = decide("corais", inst)
    sampled, _ = decide("corais:sample=200", inst, seed=3)
    assert greedy.edge.shape == (100,) and greedy.edge.min() >= 0 and greedy.edge.max() < 10
    assert (greedy.edge == again.edge).all()  # greedy decoding is deterministic
    assert makespan(inst, sampled.edge) <= makespan(inst, greedy.edge)
    # it learned something: better than keeping every request where it arrived
    assert makespan(inst, greedy.edge) < makespan(inst, inst.source)
    assert took < 1.0


def test_training_runs_and_writes_the_policy_with_its_curve(tmp_path):
    out = tmp_path / "tiny.pt"
    meta = api.train_policy("corais", 3, 8, minutes=0.05, out=out, seed=1)
    assert out.exists() and out.with_suffix(".curve.png").exists()
    assert meta["steps"] >= 1 and meta["edges"] == 3
    inst = generate(3, 8, np.random.default_rng(0))
    d, _ = decide(f"corais:policy={out}", inst)
    assert d.edge.shape == (8,)


REQUESTS = ROOT / "workloads" / "requests-classify.yaml"
EDGES5 = ROOT / "topologies" / "edges-5.yaml"


def test_schedule_prints_one_periods_dispatch_as_json():
    res = cli("schedule", str(EDGES5), str(REQUESTS), "--scheduler", "greedy-ect", "--json",
              check=True)
    plan = json.loads(res.stdout)
    assert plan["kind"] == "requests"
    ext = plan["extension"]
    assert len(plan["placements"]) == len(ext["request_time_predicted_s"]) == 12
    assert ext["makespan_predicted_s"] == pytest.approx(max(ext["edge_time_predicted_s"]
                                                            .values()))
    moved = [p for p in plan["placements"] if any(f["job"] == p["job"] for f in plan["flows"])]
    assert all(f["src"] != f["dst"] and f["path"][0] == f["src"] for f in plan["flows"])
    assert len(moved) == len(plan["flows"])


@pytest.mark.parametrize("change,message", [
    ("edges: [e1, zz]", "edges[1]: 'zz' is not a node"),
    ("replicas: {e9: 2}", "replicas.e9: not one of the edges"),
    ("size: {uniform: [500kB, 50kB]}", "0 < low <= high"),
    ("arrivals: {per_period: 0}", "arrivals.per_period"),
    ("period: -1", "period"),
])
def test_bad_requests_files_name_the_field(tmp_path, change, message):
    text = REQUESTS.read_text()
    key = change.split(":")[0]
    lines = [ln for ln in text.splitlines() if not ln.startswith(key + ":")]
    path = tmp_path / "r.yaml"
    path.write_text("\n".join(lines) + f"\n{change}\n")
    with pytest.raises(InputError, match=re.escape(message)) as e:
        api.schedule(EDGES5, path, "local")
    assert str(path) in str(e.value)


def test_a_streams_scheduler_is_refused_for_requests():
    with pytest.raises(InputError, match="plans streams workloads"):
        api.schedule(EDGES5, REQUESTS, "otfa")


def test_deadline_variant_trades_accuracy_for_time():
    """A policy that also picks a model variant: a tight deadline gets a cheaper variant,
    a loose one the most accurate; the Plan says which."""
    variants = ROOT / "workloads" / "requests-variants.yaml"
    loose = api.schedule(EDGES5, variants, "deadline-variant:30s")
    tight = api.schedule(EDGES5, variants, "deadline-variant:0.2s")
    assert set(loose.extension.variant.values()) == {"mobilenet_v2-1.0"}
    assert set(tight.extension.variant.values()) != {"mobilenet_v2-1.0"}
    assert tight.extension.makespan_predicted_s < loose.extension.makespan_predicted_s
    with pytest.raises(InputError, match="needs service.variants"):
        api.schedule(EDGES5, REQUESTS, "deadline-variant:1s")


def test_a_bad_policy_argument_is_a_clear_cli_error():
    res = cli("schedule", str(EDGES5), str(REQUESTS), "--scheduler", "ilp:abc")
    assert res.returncode == 2 and "ilp:abc: 'abc' is not a duration" in res.stderr
    assert "Traceback" not in res.stderr
