"""Every kind of bad topology gets one clear line naming file, field and fix; exit code 2;
and nothing is built."""

import pytest

from tests.conftest import cli, cli_batch, needs_root, snapshot

TWO = "nodes: {e1: {}, e2: {}}\n"
CASES = {
    "unknown_field": (TWO + "links: [{between: [e1, e2], bandwith: 3}]",
                      "links[0].bandwith: unknown field; did you mean 'bw'?"),
    "unknown_node_field": ("nodes: {e1: {cpuu: 1}, e2: {}}\nlinks: [{between: [e1, e2]}]",
                           "nodes.e1.cpuu: unknown field; did you mean 'cpu'?"),
    "unknown_top_field": ("nodez: {}\n", "nodez: unknown field; did you mean 'nodes'?"),
    "link_to_unknown_node": (TWO + "links: [{between: [e1, e3]}]",
                             "links[0].between: unknown node 'e3'"),
    "duplicate_link": (TWO + "links: [{between: [e1, e2]}, {between: [e2, e1]}]",
                       "links[1].between: duplicate link e2-e1 (already links[0])"),
    "self_loop": (TWO + "links: [{between: [e1, e1]}, {between: [e1, e2]}]",
                  "links[0].between: links 'e1' to itself"),
    "disconnected": ("nodes: {e1: {}, e2: {}, e3: {}}\nlinks: [{between: [e1, e2]}]",
                     "links: the network is disconnected: e3 cannot reach e1"),
    "zero_rate": (TWO + "links: [{between: [e1, e2], bw: 0}]",
                  "links[0].bw: rate 0 Mbit/s must be positive"),
    "negative_rate": (TWO + "links: [{between: [e1, e2], bw: -5}]",
                      "links[0].bw: -5 is not a rate; write 5 or \"5Mbit\""),
    "unit_typo": (TWO + 'links: [{between: [e1, e2], bw: "5 Mbps"}]',
                  "links[0].bw: '5 Mbps' is not a rate; write 5 or \"5Mbit\""),
    "loss_over_100": (TWO + 'links: [{between: [e1, e2], loss: "120%"}]',
                      "links[0].loss: 120% is not a loss rate"),
    "delay_typo": (TWO + 'links: [{between: [e1, e2], delay: "10 msec"}]',
                   "links[0].delay: '10 msec' is not a duration"),
    "yaml_syntax": ("nodes: {e1: {}\nlinks: []\n", "line 2, column 1: YAML syntax error"),
    "impossible_degree": ("generate: {random_mesh: {nodes: 5, degree: 6}}",
                          "generate.random_mesh.degree: degree 6.0 is impossible with 5 nodes; "
                          "use a degree of at most 4"),
    "degree_too_low": ("generate: {random_mesh: {nodes: 10, degree: 1}}",
                       "generate.random_mesh.degree: degree 1.0 cannot connect 10 nodes"),
    "unknown_profile": ("nodes: {e1: {profile: jetson-nan}, e2: {}}\nlinks: [{between: [e1, e2]}]",
                        "nodes.e1.profile: unknown profile 'jetson-nan'; "
                        "did you mean 'jetson-nano'?"),
    "tiny_memory": ("nodes: {e1: {memory: 10}, e2: {}}\nlinks: [{between: [e1, e2]}]",
                    "nodes.e1.memory: 10 MB is too little; give at least 64 MB"),
    "generated_name_clash": ("nodes: {n1: {}}\ngenerate: {star: {nodes: 3}}",
                             "generated node 'n1' clashes with a listed node"),
    "not_a_mapping": ("- e1\n- e2\n", "the file is not a mapping"),
    "no_nodes": ("links: []\n", "nodes: the topology has no nodes"),
}


@needs_root
def test_bad_topologies_are_clear_errors_and_build_nothing(tmp_path):
    before = snapshot()
    paths = {}
    for case, (text, _) in sorted(CASES.items()):
        paths[case] = tmp_path / f"{case}.yaml"
        paths[case].write_text(text)
    results = cli_batch(*(["up", str(p), "--name", "tbt-bad"] for p in paths.values()))
    for (case, path), res in zip(paths.items(), results, strict=True):
        assert res.returncode == 2, (case, res.stderr)
        message = " ".join(res.stderr.split())
        assert message.startswith(f"error: {path}: "), (case, message)
        assert CASES[case][1] in message, (case, message)
        assert "Traceback" not in res.stderr, case
    assert snapshot() == before


def test_missing_file_is_exit_2():
    res = cli("up", "/nonexistent/topo.yaml")
    assert res.returncode == 2 and "cannot read the file" in res.stderr


@needs_root
def test_netem_needed_but_missing_fails_before_building(tmp_path):
    from testbed.net.probe import probe

    if probe().netem:
        pytest.skip("this kernel has netem; the missing-netem error path cannot occur here")
    path = tmp_path / "delay.yaml"
    path.write_text(TWO + 'links: [{between: [e1, e2], bw: 5, delay: "10ms"}]')
    before = snapshot()
    res = cli("up", str(path), "--name", "tbt-netem")
    assert res.returncode == 2
    msg = " ".join(res.stderr.split())
    assert "asks for delay/jitter/loss" in msg and "no netem qdisc" in msg, msg
    assert snapshot() == before
