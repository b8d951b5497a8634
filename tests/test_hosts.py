"""One topology split over two hosts. Here the "hosts" are two network namespaces joined by a
veth pair (the network between the hosts), each with its own switch daemons; cut links are
real VXLAN tunnels between the two addresses, carrying real traffic through real OVS."""

from __future__ import annotations

import re
import socket
import ssl
import struct
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from testbed import api, measure
from testbed.errors import CapabilityError, TopologyError
from testbed.net import tls
from testbed.routing import FlowSpec
from testbed.sdn import FlowClient
from testbed.topology import partition
from testbed.topology.loader import loads
from testbed.topology.model import Topology
from tests.conftest import assert_goodput, cli, needs_root, snapshot, wait_for

SPLIT = """
hosts:
  a: {address: 10.250.7.1, netns: tbt-hosta}
  b: {address: 10.250.7.2, netns: tbt-hostb}
partition: auto
defaults: {node: {cpu: 0.1}}
generate:
  random_mesh: {nodes: 20, degree: 3, bw_mean: 20, seed: 3}
"""


def _links_in(ns: str) -> list[str]:
    out = subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True, text=True,
                         check=True).stdout
    return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines())


@needs_root
@pytest.mark.emulation
@pytest.mark.slow
def test_a_topology_split_over_two_hosts_routes_shapes_and_leaves_nothing(two_hosts, tmp_path):
    host_links = {h: _links_in(ns) for h, ns in two_hosts.namespaces().items()}
    before = snapshot()
    path = tmp_path / "split.yaml"
    path.write_text("name: tbt-split\n" + SPLIT)
    ledger = api.up(path)  # proves reachability of a sample of pairs, across the tunnels too
    try:
        topo = Topology.from_dict(ledger.topology)
        on = {n.name: n.host for n in topo.nodes}
        count = Counter(on.values())  # equal CPU quotas: 10 each, give or take one node
        assert set(count) == {"a", "b"} and all(9 <= c <= 11 for c in count.values()), count
        cut = topo.cut_links
        assert cut and len(cut) < len(topo.links) / 2
        # every switch daemon serves nodes of one host only
        daemons = ledger.extra["switch_daemon_of"]
        assert all(ledger.extra["daemon_hosts"][str(daemons[n])] == on[n] for n in on)

        st = api.status(ledger.name)
        assert all(lk["state"] == "up" for lk in st["links"]), st["links"]
        assert st["controller"]["tls_port"] == ledger.extra["controller_tls_port"]
        assert {n: info["host"] for n, info in st["nodes"].items()} == on
        shown = cli("status", "--name", ledger.name)
        assert shown.returncode == 0, shown.stderr
        assert re.search(r"kind\s*\W\s*host", shown.stdout), shown.stdout  # the host column

        # shaping on a cut link: both ends are shaped, the goodput is the ideal one
        lk = cut[0]
        assert_goodput(ledger.name, lk.a, lk.b, measure.ideal_goodput_mbit(lk.shape.bw_mbit),
                       0.03, seconds=5, port=5301)

        # a per-flow path and rate from a node on one host to a node on the other
        client = FlowClient(ledger)
        src = lk.a
        dst = next(n for n in on if on[n] != on[src] and n != lk.b
                   and topo.link_between(lk.b, n) is not None)
        flow = client.add([FlowSpec(src=src, dst=dst, path=(src, lk.b, dst), dport=5302,
                                    rate_mbit=6)])[0]
        got = assert_goodput(ledger.name, src, dst, measure.ideal_goodput_mbit(6), 0.05,
                             seconds=5, port=5302)
        hops = {f["id"]: f for f in client.list()}[flow.id]["hops"]
        assert [h["node"] for h in hops] == [src, lk.b, dst]
        assert min(h["bytes"] for h in hops) > 4 * got * 1e6 / 8 * 0.9

        # every host's switches came in over TLS through its relay, with its certificate;
        # without one, or with another testbed's, the controller's TLS port turns you away
        log = (ledger.names.state_dir / "controller.log").read_text()
        for h in ("a", "b"):
            assert f"(host {h})" in log, log[-2000:]
        assert _tls_attempt(ledger, None) == "closed"
        _, foreign = tls.issue("someone-else", ["a"])
        assert _tls_attempt(ledger, foreign["a"].write(tmp_path / "foreign", "host-a")) == \
            "closed"
        log = lambda: (ledger.names.state_dir / "controller.log").read_text()  # noqa: E731
        wait_for(lambda: "peer did not return a certificate" in log() and
                 "certificate verify failed" in log(), 5, "both refusals logged")
    finally:
        api.down(ledger.name)
    assert snapshot() == before
    assert {h: _links_in(ns) for h, ns in two_hosts.namespaces().items()} == host_links


def _tls_attempt(ledger, creds: tuple[Path, Path, Path] | None) -> str:
    """Open the controller's TLS port as a switch would (with `creds`: CA, cert, key files);
    what came back to an OpenFlow HELLO."""
    port = ledger.extra["controller_tls_port"]
    ctx = ssl.create_default_context(cafile=ledger.names.state_dir / "tls" / "ca.crt")
    if creds:
        ctx.load_cert_chain(creds[1], creds[2])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname=tls.CONTROLLER_NAME) as s:
                s.sendall(struct.pack("!BBHI", 4, 0, 8, 1))
                return "answered" if s.recv(64) else "closed"
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return "closed"


@needs_root
@pytest.mark.emulation
@pytest.mark.slow
def test_a_device_joins_the_host_it_reaches_in_a_split_topology(two_hosts, tmp_path):
    """A board wired to host b only (SSH still from here): it joins b's switches, its tunnel
    runs to b's address, traffic from a node on host a crosses the cut link and the board's
    tunnel shaped end to end, and `down` leaves board and hosts as they were."""
    from tests.fakeboard import FakeBoard

    board = FakeBoard(tmp_path).start().join("tbt-hostb", "10.250.7.2/32")
    try:
        host_links = {h: _links_in(ns) for h, ns in two_hosts.namespaces().items()}
        board_links = board.run("ip", "-o", "link").stdout
        before = snapshot()
        path = tmp_path / "board.yaml"
        path.write_text(
            "name: tbt-splitdev\n" + two_hosts.yaml() + "partition: auto\n"
            f"nodes:\n  e1: {{host: a}}\n  e2: {{host: b}}\n"
            f"  nx1: {{kind: device, ssh: {board.ssh_yaml()}}}\n"
            "links:\n  - {between: [e1, e2], bw: 20}\n  - {between: [e2, nx1], bw: 5}\n")
        ledger = api.up(path)  # proves reachability, the board included
        try:
            topo = Topology.from_dict(ledger.topology)
            assert topo.node("nx1").host == "b"  # partition: auto put it by its link
            att = ledger.extra["devices"]["nx1"]
            assert att["host_ip"] == "10.250.7.2"  # its tunnel ends at host b's address
            daemon = ledger.extra["switch_daemon_of"]["nx1"]
            assert ledger.extra["daemon_hosts"][str(daemon)] == "b"
            st = api.status(ledger.name)
            assert st["nodes"]["nx1"]["device"]["tunnel"] == "up"
            assert st["nodes"]["nx1"]["host"] == "b"
            for src, dst in [("e1", "nx1"), ("nx1", "e1")]:  # over the cut link and the board's
                assert_goodput(ledger.name, src, dst, measure.ideal_goodput_mbit(5), 0.03,
                               seconds=3, port=5311)
            res = cli("exec", "nx1", "--name", ledger.name, "--", "sh", "-c", "exit 3")
            assert res.returncode == 3, res.stderr
        finally:
            api.down(ledger.name)
        assert snapshot() == before
        assert board.run("ip", "-o", "link").stdout == board_links
        assert {h: _links_in(ns) for h, ns in two_hosts.namespaces().items()} == host_links

        # pinned to host a, which it cannot reach: refused before anything is built
        path.write_text(path.read_text().replace("kind: device,", "kind: device, host: a,"))
        with pytest.raises(CapabilityError, match=r"a route to host a's address 10\.250\.7\.1"):
            api.up(path)
        assert snapshot() == before
    finally:
        board.close()


@needs_root
def test_a_host_whose_address_is_elsewhere_is_refused_before_anything_is_built(
        two_hosts, tmp_path):
    before = snapshot()
    path = tmp_path / "wrong.yaml"
    path.write_text("name: tbt-wrong\n" + SPLIT.replace("10.250.7.2, netns", "10.250.7.9, netns"))
    with pytest.raises(CapabilityError, match=r"hosts\.b\.address: 10\.250\.7\.9 is not an "
                                              r"address of namespace tbt-hostb"):
        api.up(path)
    path.write_text("name: tbt-wrong\n" + SPLIT.replace("netns: tbt-hostb", "netns: tbt-nohost"))
    with pytest.raises(CapabilityError, match=r"hosts\.b\.netns: network namespace tbt-nohost "
                                              "does not exist"):
        api.up(path)
    assert snapshot() == before


def test_partition_cuts_little_bandwidth_balances_cpu_and_keeps_pins():
    text = SPLIT.replace("bw_mean: 20", "bw_mean: 20, bw_var: 100").replace(
        "defaults: {node: {cpu: 0.1}}", "nodes: {x1: {host: b, cpu: 2}, x2: {host: b}}\n"
        "links: [{between: [x1, n1], bw: 5}, {between: [x2, x1], bw: 50}]")
    topo = loads(text)
    on = {n.name: n.host for n in topo.nodes}
    assert on["x1"] == on["x2"] == "b"
    cpu = Counter()
    for n in topo.nodes:
        cpu[n.host] += partition.node_cpu(n.cpu)
    share = sum(cpu.values()) / 2
    assert all(abs(c - share) <= 2 for c in cpu.values()), cpu
    links = [(lk.a, lk.b, lk.shape.bw_mbit) for lk in topo.links]
    cut = partition.cut_mbit(on, links)
    # far below a split that ignores the links (nodes alternating between the hosts)
    names = [n.name for n in topo.nodes]
    alternating = {n: "ab"[i % 2] for i, n in enumerate(names)}
    assert cut < 0.5 * partition.cut_mbit(alternating, links)
    assert loads(text).to_dict() == topo.to_dict()  # the same file, the same split


@pytest.mark.parametrize("change, where, fix", [
    (("partition: auto\n", ""), "nodes.n1.host", "partition: auto"),
    (("hosts:\n  a: {address: 10.250.7.1, netns: tbt-hosta}\n  b: {address: 10.250.7.2, "
      "netns: tbt-hostb}\n", ""), "partition", "add hosts:"),
    (("10.250.7.2", "10.250.7.1"), "hosts", "its own address"),
    (("10.250.7.2", "10.250.7"), "hosts.b.address", ""),
    (("generate:", "nodes: {x: {host: c}}\nlinks: [{between: [x, n1]}]\ngenerate:"),
     "nodes.x.host", "use one of a, b"),
])
def test_bad_host_settings_name_the_field_and_the_fix(change, where, fix):
    with pytest.raises(TopologyError) as e:
        loads(SPLIT.replace(*change), source="split.yaml")
    assert f"split.yaml: {where}" in str(e.value) and fix in str(e.value)
