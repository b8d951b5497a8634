"""Default routes and flow validation, as pure functions of the fabric."""

import itertools

import pytest

from testbed.errors import FlowError
from testbed.routing import Fabric, FlowSpec, default_path, next_hops, validate_flow
from testbed.topology import loads

SQUARE = """
nodes: {e1: {}, e2: {}, e3: {}, e4: {}}
links:
  - {between: [e1, e2], bw: 10}
  - {between: [e2, e3], bw: 10}
  - {between: [e3, e4], bw: 10}
  - {between: [e4, e1], bw: 10}
  - {between: [e1, e3], bw: 5}
"""


@pytest.fixture
def square():
    return Fabric.of(loads(SQUARE, "square.yaml"))


def test_shortest_paths_are_consistent_on_meshes():
    topo = loads("generate: {random_mesh: {nodes: 40, degree: 3, seed: 5}}", "m.yaml")
    fabric = Fabric.of(topo)
    import networkx as nx

    hops = next_hops(fabric)
    for a, b in itertools.permutations(fabric.nodes, 2):
        path = default_path(fabric, a, b, hops)
        assert len(path) - 1 == nx.shortest_path_length(topo.graph, a, b)
        assert len(set(path)) == len(path)  # no loops


def test_ties_break_deterministically(square):
    # e2 -> e4 has two shortest paths (via e1 or e3); the lower node index wins
    assert default_path(square, "e2", "e4") == ["e2", "e1", "e4"]
    assert default_path(square, "e1", "e3") == ["e1", "e3"]


@pytest.mark.parametrize("flow,message", [
    (dict(src="e1", dst="e3", path=("e1", "e4", "e2", "e3")), "e4 and e2 are not linked"),
    (dict(src="e1", dst="e9", path=("e1", "e9")), "unknown destination node 'e9'"),
    (dict(src="e1", dst="e3", path=("e2", "e3")), "must start at e1 and end at e3"),
    (dict(src="e1", dst="e3", path=("e1", "e3"), dport=70000), "dport 70000 is out of range"),
    (dict(src="e1", dst="e3", path=("e1", "e3"), sport=0), "sport 0 is out of range"),
    (dict(src="e1", dst="e3", path=("e1", "e3"), proto="sctp"), "protocol 'sctp'"),
    (dict(src="e1", dst="e3", path=("e1", "e3"), rate_mbit=6), r"exceeds link e1-e3 \(5 Mbit/s\)"),
    # every link counts, not only the first; the replies' cap too
    (dict(src="e2", dst="e3", path=("e2", "e1", "e3"), rate_mbit=6),
     "rate 6 Mbit/s exceeds link e1-e3 .* on path e2,e1,e3"),
    (dict(src="e2", dst="e3", path=("e2", "e1", "e3"), reverse_rate_mbit=7),
     "reverse rate 7 Mbit/s exceeds link e3-e1 .* on path e3,e1,e2"),
    (dict(src="e1", dst="e3", path=("e1", "e2", "e1", "e2", "e3")), "a loop"),
    (dict(src="e1", dst="e1", path=("e1",)), "the same node"),
])
def test_invalid_flows_are_rejected(square, flow, message):
    with pytest.raises(FlowError, match=message):
        validate_flow(square, FlowSpec(**flow))


def test_valid_walk_and_round_trip(square):
    f = FlowSpec(src="e1", dst="e3", path=("e1", "e2", "e3"), dport=5201, rate_mbit=3)
    validate_flow(square, f)
    assert FlowSpec.from_dict(f.to_dict()) == f


@pytest.mark.parametrize("seed", range(5))
def test_schedulers_and_controller_agree_on_the_shortest_path(seed):
    """One definition of "the shortest path": what a scheduler predicts on is what the
    controller's default routes carry (they disagreed on 365 of 4,350 pairs before)."""
    from testbed.schedulers.network import NetworkView

    topo = loads(f"generate: {{random_mesh: {{nodes: 30, degree: 3, seed: {seed}}}}}", "m.yaml")
    fabric, view = Fabric.of(topo), NetworkView.from_topology(topo)
    hops = next_hops(fabric)
    pairs = list(itertools.permutations(fabric.nodes, 2))
    assert len(pairs) == 870
    disagree = [(a, b) for a, b in pairs
                if tuple(default_path(fabric, a, b, hops)) != view.shortest_path(a, b)]
    assert disagree == []
    for a, b in pairs[:50]:  # the other candidates are distinct simple paths, shortest first
        paths = view.paths(a, b)
        assert len(set(paths)) == len(paths) and [len(p) for p in paths] == sorted(
            len(p) for p in paths)


def test_packed_default_routes_are_byte_for_byte_what_os_ken_sends():
    """controllers/ofwire.py packs route FLOW_MODs itself (speed); os-ken is the reference."""
    from os_ken.ofproto import ofproto_v1_3 as ofp
    from os_ken.ofproto import ofproto_v1_3_parser as parser

    from controllers.ofwire import route_rules

    class Protocol:  # all OFPFlowMod reads from a datapath: its protocol modules
        ofproto, ofproto_parser = ofp, parser

    rules = [("10.0.0.7", 3), ("10.0.3.250", 65000), ("10.0.255.254", 2)]
    want, xid = b"", 0xFFFFFFFE  # wraps to 0 as a datapath's xid counter does
    for ip, port in rules:
        for match in (parser.OFPMatch(eth_type=0x0800, ipv4_dst=ip),
                      parser.OFPMatch(eth_type=0x0806, arp_tpa=ip)):
            xid = (xid + 1) & ofp.MAX_XID
            msg = parser.OFPFlowMod(
                Protocol(), cookie=1, priority=100, match=match, command=ofp.OFPFC_ADD,
                instructions=[parser.OFPInstructionActions(
                    ofp.OFPIT_APPLY_ACTIONS, [parser.OFPActionOutput(port)])])
            msg.set_xid(xid)
            msg.serialize()
            want += bytes(msg.buf)
    got, xids = route_rules(rules, 100, 1, 0xFFFFFFFE, ofp.MAX_XID)
    assert got == want
    assert xids == [0xFFFFFFFF, 0, 1, 2, 3, 4]
