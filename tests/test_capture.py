"""Packet capture on a link: transit traffic between two other nodes is seen on the link it
crosses, as text or as a pcap file tcpdump reads back; interface names are in status."""

import subprocess

import pytest

from testbed import api
from tests.conftest import ROOT, TESTBED, cli, needs_root

pytestmark = [needs_root, pytest.mark.emulation]

CHAIN = """
nodes: {a: {}, b: {}, c: {}}
links: [{between: [a, b], bw: 10}, {between: [b, c], bw: 10}]
"""


def ping_while(name: str, capture: subprocess.Popen) -> str:
    """Once tcpdump listens, ping a -> c (through b) until the capture has its packets;
    returns what it printed."""
    ip_c = api.status(name)["nodes"]["c"]["ip"]
    first = capture.stderr.readline()  # "listening on IFACE ..." (or why it could not)
    assert "listening on" in first or "suppressed" in first, first
    for _ in range(40):  # bounded: 40 pings of 0.25 s at most
        if capture.poll() is not None:
            break
        api.run_in_node(name, "a", ["ping", "-c", "1", "-W", "1", ip_c], timeout=10)
    out, err = capture.communicate(timeout=30)
    assert capture.returncode == 0, first + err
    return out


def test_capture_on_a_link_sees_transit_traffic_as_text_and_pcap(bring_up, tmp_path):
    ledger = bring_up("capture", CHAIN)
    st = api.status(ledger.name)
    ip_a, ip_c = st["nodes"]["a"]["ip"], st["nodes"]["c"]["ip"]
    assert all(len(lk["interfaces"]) == 2 for lk in st["links"])
    text = subprocess.Popen([*TESTBED, "capture", "b", "c", "--name", ledger.name, "-c", "2",
                             "--duration", "30", "--", "icmp"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = ping_while(ledger.name, text)
    assert f"{ip_a} > {ip_c}: ICMP echo request" in out, out
    pcap = tmp_path / "bc.pcap"
    dump = subprocess.Popen([*TESTBED, "capture", "b", "c", "--name", ledger.name,
                             "--node-side", "c", "-w", str(pcap), "-c", "4", "--duration",
                             "30", "--", "icmp"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    ping_while(ledger.name, dump)
    read = subprocess.run(["tcpdump", "-n", "-r", str(pcap)], capture_output=True, text=True)
    lines = read.stdout.splitlines()
    assert len(lines) == 4 and any(f"{ip_c} > {ip_a}: ICMP echo reply" in x for x in lines)
    res = cli("capture", "a", "c", "--name", ledger.name, "-c", "1")
    assert res.returncode == 2 and "no link between a and c" in res.stderr
    res = cli("capture", "a", "b", "--name", ledger.name, "--node-side", "c", "-c", "1")
    assert res.returncode == 2 and "give a or b" in res.stderr
