"""Per-flow paths and rates with real OVS, os-ken and iperf3."""

import subprocess
import threading

import pytest

from testbed import api, measure
from testbed.errors import FlowError
from testbed.routing import FlowSpec
from testbed.sdn import FlowClient
from tests.conftest import cli, needs_root

pytestmark = [needs_root, pytest.mark.emulation]

SQUARE = """
defaults:
  link: {bw: 10}
nodes: {e1: {}, e2: {}, e3: {}, e4: {}}
links:
  - {between: [e1, e2]}
  - {between: [e2, e3]}
  - {between: [e3, e4]}
  - {between: [e4, e1]}
  - {between: [e1, e3]}
"""


def _bytes(ports: dict, node: str, neighbour: str) -> int:
    return ports[node][neighbour]["tx_bytes"]


@pytest.mark.slow
def test_flow_is_forced_along_the_chosen_path(bring_up):
    ledger = bring_up("steer", SQUARE)
    client = FlowClient(ledger)
    for via in ("e2", "e4"):
        other = "e4" if via == "e2" else "e2"
        res = cli("flow", "add", "--name", ledger.name, "--src", "e1", "--dst", "e3",
                  "--proto", "tcp", "--dport", "5201", "--path", f"e1,{via},e3")
        assert res.returncode == 0, res.stderr
        flow_id = int(res.stdout.strip())
        before = client.ports()
        got = measure.iperf3(ledger.name, "e1", "e3", seconds=3, omit=1, port=5201)
        after = client.ports()
        sent = 4 * got * 1e6 / 8 * 0.9  # at least 90% of the measured payload
        assert _bytes(after, "e1", via) - _bytes(before, "e1", via) > sent
        assert _bytes(after, via, "e3") - _bytes(before, via, "e3") > sent
        # the diagonal and the other side carried none of it (a few ARP/ICMP bytes at most)
        assert _bytes(after, "e1", "e3") - _bytes(before, "e1", "e3") < 20_000
        assert _bytes(after, "e1", other) - _bytes(before, "e1", other) < 20_000
        flows = {f["id"]: f for f in client.list()}
        assert [h["node"] for h in flows[flow_id]["hops"]] == ["e1", via, "e3"]
        assert min(h["bytes"] for h in flows[flow_id]["hops"]) > sent
        assert cli("flow", "rm", "--name", ledger.name, str(flow_id)).returncode == 0


@pytest.mark.slow
def test_two_flows_share_a_link_at_their_rates(bring_up):
    ledger = bring_up("share", "nodes: {a: {}, b: {}}\nlinks: [{between: [a, b], bw: 10}]")
    client = FlowClient(ledger)
    client.add([FlowSpec(src="a", dst="b", path=("a", "b"), dport=5301, rate_mbit=7),
                FlowSpec(src="a", dst="b", path=("a", "b"), dport=5302, rate_mbit=3)])
    assert sorted(client.rate_classes("a").values()) == [3_000_000, 7_000_000]
    results = {}

    def run(port):
        results[port] = measure.iperf3(ledger.name, "a", "b", seconds=8, omit=2, port=port)

    threads = [threading.Thread(target=run, args=(p,)) for p in (5301, 5302)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for port, rate in ((5301, 7), (5302, 3)):
        ideal = measure.ideal_goodput_mbit(rate)
        assert abs(results[port] - ideal) / ideal < 0.10, (port, results[port], ideal)


def test_batch_of_200_flows_installed_and_removed_in_one_call(bring_up):
    ledger = bring_up("batch", SQUARE)
    client = FlowClient(ledger)
    paths = [("e1", "e2", "e3"), ("e1", "e4", "e3"), ("e1", "e3")]
    specs = [FlowSpec(src="e1", dst="e3", path=paths[i % 3], dport=10000 + i,
                      rate_mbit=1 if i % 2 else None) for i in range(200)]
    added = client.add(specs)
    assert len(added) == 200 and len({f.id for f in added}) == 200
    assert len(client.list()) == 200
    assert len(client.rate_classes("e1")) == 100
    assert len(client.remove_all()) == 200
    assert client.list() == [] and client.rate_classes("e1") == {}
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows",
                          ledger.names.bridge(0)], capture_output=True, text=True).stdout
    assert "priority=1000" not in out


def test_bad_flows_are_refused_and_nothing_is_half_installed(bring_up):
    ledger = bring_up("badflow", SQUARE)
    client = FlowClient(ledger)
    good = FlowSpec(src="e1", dst="e3", path=("e1", "e2", "e3"), dport=5201)
    bad = FlowSpec(src="e1", dst="e3", path=("e1", "e2", "e4", "e3"), dport=5202)
    with pytest.raises(FlowError, match="e2 and e4 are not linked"):
        client.add([good, bad])
    assert client.list() == []
    for args, msg in [(["--src", "e1", "--dst", "e3", "--path", "e1,e2,e4,e3"], "not linked"),
                      (["--src", "e1", "--dst", "x9"], "unknown node 'x9'"),
                      (["--src", "e1", "--dst", "e3", "--dport", "70000"], "out of range"),
                      (["--src", "e1", "--dst", "e3", "--rate", "11"], "exceeds link e1-e3")]:
        res = cli("flow", "add", "--name", ledger.name, *args)
        assert res.returncode == 2 and msg in res.stderr, res.stderr
    assert cli("flow", "rm", "--name", ledger.name, "42").returncode == 2
    assert client.list() == []


def test_flow_ls_json_contract(bring_up):
    ledger = bring_up("lsjson", SQUARE)
    res = cli("flow", "add", "--name", ledger.name, "--src", "e2", "--dst", "e4",
              "--dport", "80", "--rate", "2")
    flow_id = int(res.stdout)
    import json

    (flow,) = json.loads(cli("flow", "ls", "--name", ledger.name, "--json").stdout)
    assert flow["id"] == flow_id and flow["path"] == ["e2", "e1", "e4"]  # default path
    assert flow["rate_mbit"] == 2 and {h["node"] for h in flow["hops"]} == {"e2", "e1", "e4"}
    assert set(flow) >= {"id", "src", "dst", "path", "rate_mbit", "hops"}
    assert api.status(ledger.name)["controller"]["flows"] == 1


@pytest.mark.slow
def test_direction_is_explicit_duplicates_refused_and_every_link_checked(bring_up):
    """A download (the server sends, `iperf3 -R`) travels the flow's reply direction: capped by
    --reverse-rate at the destination, counted as reverse bytes at every hop."""
    ledger = bring_up("direction", """
nodes: {a: {}, b: {}, c: {}}
links: [{between: [a, b], bw: 10}, {between: [b, c], bw: 3}]
""")
    client = FlowClient(ledger)
    res = cli("flow", "add", "--name", ledger.name, "--src", "a", "--dst", "c", "--rate", "5")
    assert res.returncode == 2 and "exceeds link b-c (3 Mbit/s)" in " ".join(res.stderr.split())
    add = ["flow", "add", "--name", ledger.name, "--src", "a", "--dst", "c", "--dport", "5401"]
    res = cli(*add, "--rate", "0.5", "--reverse-rate", "2")
    assert res.returncode == 0, res.stderr
    flow_id = int(res.stdout)
    assert client.rate_classes("a") == {flow_id: 500_000}
    assert client.rate_classes("c") == {flow_id: 2_000_000}
    for again in (add, ["flow", "add", "--name", ledger.name, "--src", "c", "--dst", "a",
                        "--sport", "5401"]):  # the same match, or its mirror image
        res = cli(*again)
        msg = " ".join(res.stderr.split())
        assert res.returncode == 2 and f"already steered by flow {flow_id}" in msg, msg
    down = measure.iperf3(ledger.name, "a", "c", seconds=4, omit=1, port=5401, extra=["-R"])
    # capped by the reverse rate (2), not the forward one (0.5); a loaded CI host can slow the
    # sender (1.3 of 1.9 Mbit/s was seen once), so the floor is twice the forward cap
    ideal = measure.ideal_goodput_mbit(2)
    assert 2 * measure.ideal_goodput_mbit(0.5) < down < ideal * 1.05, (down, ideal)
    (flow,) = client.list()
    assert all(h["reverse_bytes"] > 4 * down * 1e6 / 8 * 0.8 for h in flow["hops"])
    assert all(h["bytes"] < h["reverse_bytes"] / 5 for h in flow["hops"])  # only ACKs
    res = cli("flow", "add", "--name", ledger.name, "--src", "a", "--dst", "c", "--dport",
              "5402", "--rate", "1.5", "--both")
    both_id = int(res.stdout)
    assert client.rate_classes("a")[both_id] == client.rate_classes("c")[both_id] == 1_500_000
    assert len(client.remove_all()) == 2
    assert client.rate_classes("a") == {} and client.rate_classes("c") == {}
