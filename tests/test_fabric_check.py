"""The fabric at scale: which datapath `up` uses, the reachability proof that grows linearly
with the topology (and still catches a broken link), and the fabric's own idle latency
recorded at `up` and shown by `status` and runs."""

import json
import subprocess

import pytest
from pyroute2 import IPRoute

from testbed.net import ovs, shaping
from testbed.net.reach import proof_pairs
from testbed.topology import Topology, loads
from tests.conftest import cli, needs_root


def test_the_kernel_datapath_is_chosen_exactly_when_its_module_is_loaded(tmp_path):
    assert ovs.datapath_type(tmp_path / "no-module") == "netdev"
    (tmp_path / "openvswitch").mkdir()
    assert ovs.datapath_type(tmp_path / "openvswitch") == "system"


def test_the_proof_covers_every_link_both_ways_and_grows_linearly():
    topo = loads("generate: {random_mesh: {nodes: 300, degree: 3, seed: 1}}")
    names = [n.name for n in topo.nodes]
    links = [(lk.a, lk.b) for lk in topo.links]
    pairs = proof_pairs(names, links, set(names), seed="x")
    assert {(a, b) for a, b in links} | {(b, a) for a, b in links} <= set(pairs)
    assert len(pairs) <= 2 * len(links) + 3 * len(names)  # not 300 * 299
    assert pairs == proof_pairs(names, links, set(names), seed="x")  # stable per testbed
    assert all(a != b for a, b in pairs)
    remote = proof_pairs(names, links, set(names) - {"n1"}, seed="x")
    assert not any(a == "n1" for a, _ in remote) and any(b == "n1" for _, b in remote)


@needs_root
@pytest.mark.emulation
def test_a_silently_broken_link_is_caught_by_the_scaled_check(bring_up):
    ledger = bring_up("brk", "nodes: {a: {}, b: {}, c: {}, d: {}}\n"
                             "links: [{between: [a, b], bw: 10}, {between: [b, c], bw: 10},\n"
                             "        {between: [c, d], bw: 10}]")
    st = json.loads(cli("status", "--name", ledger.name, "--json").stdout)
    fab = st["fabric"]
    assert fab["datapath"] == ovs.datapath_type() and not fab["all_pairs"]
    assert fab["pairs_proved"] >= 6 and fab["longest_path_hops"] == 3
    assert fab["rtt_one_hop_ms"] > 0 and fab["rtt_longest_path_ms"] > 0
    assert fab["rtt_per_hop_ms"] == pytest.approx(fab["rtt_longest_path_ms"] / 3, abs=1e-3)
    res = cli("check", "--name", ledger.name)
    assert res.returncode == 0 and "pairs proved" in res.stdout, res.stderr
    # b -> c starved on the link's egress (8 bit/s), carrier up: no switch or controller
    # notices it
    port = ledger.names.link_port(1, 0)
    starve = "rate 8bit ceil 8bit burst 10 cburst 10"
    subprocess.run(["tc", "class", "change", "dev", port, "parent", "1:", "classid", "1:1",
                    "htb", *starve.split()], check=True, capture_output=True)
    res = cli("check", "--name", ledger.name)
    assert res.returncode == 1, res.stdout
    assert "cannot reach" in res.stderr and ("b->c" in res.stderr or "c->b" in res.stderr)
    res = cli("check", "--all-pairs", "--name", ledger.name)
    assert res.returncode == 1 and "of 12 node pairs checked" in res.stderr
    subprocess.run(["tc", "qdisc", "del", "dev", port, "root"], check=True)  # shaped again:
    with IPRoute() as ip:
        shape = Topology.from_dict(ledger.topology).links[1].shape
        shaping.apply(ip, ip.link_lookup(ifname=port)[0], shape, netem_ok=False)
    res = cli("check", "--all-pairs", "--name", ledger.name)
    assert res.returncode == 0 and "12 pairs proved (all pairs)" in res.stdout, res.stderr
