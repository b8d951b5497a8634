"""The fabric at scale: which datapath `up` uses, the reachability proof that grows linearly
with the topology (and still catches a broken link), and the fabric's own idle latency
recorded at `up` and shown by `status` and runs."""

import json
import os
import subprocess
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from testbed import api, measure
from testbed.net import netns, ovs, shaping, shards
from testbed.net.reach import proof_pairs
from testbed.topology import Topology, loads
from tests.conftest import assert_goodput, cli, needs_root, wait_for


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


def test_switches_are_spread_over_daemons_only_on_the_userspace_datapath():
    kinds = {f"n{i}": "host" for i in range(1, 20)} | {"jet": "device"}
    place = shards.assign(kinds, 8, "netdev")
    assert place["jet"] == 0  # a device's tunnel end stays on the host's own Open vSwitch
    assert shards.daemons(place) == [1, 2, 3]
    assert max(list(place.values()).count(k) for k in (1, 2, 3)) == 8
    assert set(shards.assign(kinds, 8, "system").values()) == {0}  # kernel: no polling
    assert set(shards.assign(kinds, 0, "netdev").values()) == {0}  # 0: one daemon for all
    assert set(shards.assign(dict(list(kinds.items())[:4]), None, "netdev").values()) == {0}
    assert shards.daemons(shards.assign(dict(list(kinds.items())[:5]), None, "netdev")) == [1, 2]


@needs_root
@pytest.mark.emulation
@pytest.mark.slow
def test_a_fabric_over_several_switch_daemons_forwards_shapes_changes_and_leaves_nothing(
        bring_up):
    """Six nodes in a line, two switches per daemon: every link between b-c and d-e joins two
    ovs-vswitchd processes in two namespaces. Routes cross them, the cut link's shaping holds
    (iperf3) and changes in place, a cut link taken down breaks the line, and `down` stops
    every daemon and removes every namespace."""
    line = "abcdef"
    text = ("fabric: {switches_per_daemon: 2}\n"
            "nodes: {" + ", ".join(f"{n}: {{}}" for n in line) + "}\n"
            "links: [" + ", ".join(
                f"{{between: [{x}, {y}], bw: {8 if x + y == 'bc' else 50}}}"
                for x, y in zip(line, line[1:], strict=False)) + "]")
    ledger = bring_up("shard", text)
    name, names = ledger.name, ledger.names
    st = json.loads(cli("status", "--name", name, "--json").stdout)
    assert st["fabric"]["switch_daemons"] == 4  # the host's (unused here) + 3
    assert all(lk["state"] == "up" for lk in st["links"])
    assert ledger.extra["switch_daemon_of"] == {"a": 1, "b": 1, "c": 2, "d": 2, "e": 3, "f": 3}
    daemons = [p for p in _processes_under(names.state_dir) if "ovs-vswitchd" in p[1]]
    assert len(daemons) == 3, daemons
    assert st["fabric"]["longest_path_hops"] == 5 and st["fabric"]["rtt_per_hop_ms"] > 0
    res = cli("check", "--all-pairs", "--name", name)
    assert res.returncode == 0 and "30 pairs proved" in res.stdout, res.stdout + res.stderr

    assert_goodput(name, "a", "f", measure.ideal_goodput_mbit(8), 0.03, seconds=6,
                   omit=2)  # across both cut links
    st = json.loads(cli("status", "--name", name, "--json").stdout)
    assert st["fabric"]["switch_daemons_cpu_s"] > 0  # forwarding's CPU, outside node quotas

    res = cli("link", "set", "b", "c", "--bw", "4", "--name", name)
    assert res.returncode == 0 and "4 Mbit/s" in res.stdout, res.stdout + res.stderr
    res = cli("link", "ls", "--name", name)
    assert res.stdout.count("4 Mbit/s") == 2, res.stdout  # both directions, read back
    assert cli("link", "down", "b", "c", "--name", name).returncode == 0
    res = cli("check", "--name", name)
    assert res.returncode == 1 and "cannot reach" in res.stderr
    assert cli("link", "up", "b", "c", "--name", name).returncode == 0
    wait_for(lambda: not json.loads(cli("status", "--name", name, "--json").stdout)[
        "controller"]["links_down"], 20, "the controller to see b-c up again")
    res = cli("check", "--name", name)
    assert res.returncode == 0, res.stderr

    api.down(name)
    assert not netns.list_names(names.netns_prefix)
    assert not _processes_under(names.state_dir)


def _processes_under(state_dir) -> list[tuple[int, str]]:
    """(pid, command line) of every process whose command line names `state_dir`."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if f"{state_dir}/" in cmd:
            out.append((int(pid), cmd))
    return out
