"""The topology format: units, generators, and the model built from a valid file."""

import pytest

from testbed.topology import loads
from testbed.topology.generate import random_mesh
from testbed.topology.schema import RandomMesh
from testbed.units import parse_percent, parse_rate_mbit, parse_size_bytes, parse_time_ms


@pytest.mark.parametrize("text,mbit", [(5, 5.0), ("5Mbit", 5.0), ("500kbit", 0.5),
                                       ("1Gbit", 1000.0), ("2.5mbit", 2.5), ("800bit", 0.0008)])
def test_rates(text, mbit):
    assert parse_rate_mbit(text) == pytest.approx(mbit)


@pytest.mark.parametrize("bad", ["5 Mbps", "5Mbps", "fast", "", "5 Mbit/s"])
def test_rate_typos_are_rejected(bad):
    with pytest.raises(ValueError, match="is not a rate"):
        parse_rate_mbit(bad)


def test_times_percent_sizes():
    assert parse_time_ms("10ms") == 10 and parse_time_ms("1s") == 1000
    assert parse_time_ms("250us") == pytest.approx(0.25) and parse_time_ms(3) == 3
    assert parse_percent("0.5%") == 0.5 and parse_percent(2) == 2
    assert parse_size_bytes("6MB") == 6_000_000 and parse_size_bytes("200kB") == 200_000
    assert parse_size_bytes("1GiB") == 1024**3
    assert parse_size_bytes(512, plain_unit="mb") == 512_000_000


ISSUE_EXAMPLE = """
name: square
defaults:
  link: {bw: 10}
nodes:
  e1: {}
  e2: {cpu: 0.5}
  e3: {profile: raspberry-pi}
  e4: {}
links:
  - {between: [e1, e2], bw: 2}
  - {between: [e2, e3], bw: "500kbit", delay: "10ms", loss: "0.5%"}
  - {between: [e3, e4]}
  - {between: [e4, e1], bw: 20}
  - {between: [e1, e3], bw: 8}
  - {between: [e1, n1]}
generate:
  random_mesh: {nodes: 30, degree: 3, bw_mean: 1, bw_var: 0.3, seed: 7}
"""


def test_issue_example_mixes_listed_and_generated_nodes():
    t = loads(ISSUE_EXAMPLE, "square.yaml")
    assert t.name == "square"
    assert len(t.nodes) == 34 and t.node("n30").name == "n30"
    assert t.links[0].shape.bw_mbit == 2
    assert t.links[1].shape.bw_mbit == 0.5 and t.links[1].shape.delay_ms == 10
    assert t.links[1].shape.loss_pct == 0.5
    assert t.links[2].shape.bw_mbit == 10  # from defaults
    assert t.node("e2").cpu == 0.5
    assert t.node("e3").memory_mb == 4096 and t.node("e3").cpu > 0
    assert t.needs_netem
    ips = {n.ip for n in t.nodes}
    assert len(ips) == 34 and t.node("e1").ip == "10.0.0.1"
    assert len(t.links) == 6 + 45  # 30 nodes x degree 3 / 2


def test_name_defaults_to_file_stem(tmp_path):
    from testbed.topology import load

    p = tmp_path / "my-lab.yaml"
    p.write_text("nodes: {a: {}, b: {}}\nlinks: [{between: [a, b]}]\n")
    assert load(p).name == "my-lab"


@pytest.mark.parametrize("n,d", [(10, 3), (30, 3), (50, 2.5), (70, 4), (5, 4)])
def test_random_mesh_is_connected_with_the_asked_degree(n, d):
    import networkx as nx

    names, edges = random_mesh(RandomMesh(nodes=n, degree=d, bw_mean=1, bw_var=0.3, seed=3))
    g = nx.Graph()
    g.add_nodes_from(names)
    g.add_edges_from((a, b) for a, b, _ in edges)
    assert nx.is_connected(g)
    assert 2 * g.number_of_edges() / n == pytest.approx(d, abs=1.01 / n)
    assert all(bw >= 0.1 for _, _, bw in edges)


def test_random_mesh_is_deterministic_per_seed():
    spec = RandomMesh(nodes=20, degree=3, bw_mean=10, bw_var=0.3, seed=11)
    assert random_mesh(spec) == random_mesh(spec)
    assert random_mesh(spec) != random_mesh(RandomMesh(**{**spec.model_dump(), "seed": 12}))


def test_star_and_tree_generators():
    star = loads("generate: {star: {nodes: 5, bw: 3}}", "s.yaml")
    assert len(star.links) == 4 and all(lk.a == "n1" for lk in star.links)
    tree = loads("generate: {tree: {depth: 2, fanout: 3}}", "t.yaml")
    assert len(tree.nodes) == 13 and len(tree.links) == 12
