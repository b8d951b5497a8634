"""Shaping fidelity with real iperf3: receiver-side goodput, 10 s after skipping 2 s, within 3%
of the ideal TCP goodput of a link of that line rate (rate x 1448/1514)."""

import pytest

from testbed import measure
from testbed.htb import htb_params
from testbed.naming import Names
from testbed.net import netns
from testbed.net.shaping import read_back
from testbed.procs import cpu_jiffies
from tests.conftest import assert_goodput, needs_root

pytestmark = [needs_root, pytest.mark.emulation]


@pytest.mark.slow
@pytest.mark.parametrize("rate", [1, 5, 10, 30])
def test_goodput_within_3_percent_of_ideal(bring_up, rate):
    ledger = bring_up(f"rate{rate}", f"nodes: {{a: {{}}, b: {{}}}}\n"
                                     f"links: [{{between: [a, b], bw: {rate}}}]")
    assert_goodput(ledger.name, "a", "b", measure.ideal_goodput_mbit(rate), 0.03, seconds=10,
                   omit=2)


@pytest.mark.slow
def test_two_hop_path_is_capped_by_its_slowest_link(bring_up):
    ledger = bring_up("twohop", "nodes: {a: {}, b: {}, c: {}}\n"
                                "links: [{between: [a, b], bw: 20}, {between: [b, c], bw: 4}]")
    ideal = measure.ideal_goodput_mbit(4)
    for src, dst in [("a", "c"), ("c", "a")]:  # both directions shaped
        assert_goodput(ledger.name, src, dst, ideal, 0.03, seconds=6, omit=2)


def test_kernel_holds_the_shaping_asked_for(bring_up):
    ledger = bring_up("readback", "nodes: {a: {}, b: {}, c: {}}\n"
                                  "links: [{between: [a, b], bw: '500kbit'}, {between: [b, c]}]")
    names = Names(ledger.name)
    with netns.netlink(None) as ip:
        held = read_back(ip, [ip.link_lookup(ifname=names.link_port(k, e))[0]
                              for k in (0, 1) for e in (0, 1)])
        for end in (0, 1):
            idx = ip.link_lookup(ifname=names.link_port(0, end))[0]
            assert held[idx]["rate_bps"] == htb_params(0.5).rate_bps == 500_000
            assert held[idx]["leaf"] == "tbf"  # paces what the HTB class lets through
            unshaped = ip.link_lookup(ifname=names.link_port(1, end))[0]
            assert unshaped not in held


def test_htb_parameters_scale_with_rate():
    low, high = htb_params(0.5), htb_params(100)
    assert low.burst_bytes == 2 * 1514 and high.burst_bytes == 62_500  # 5 ms at 100 Mbit/s
    assert low.queue_frames == 8 and high.queue_frames == 825


def _netem_or_skip() -> None:
    from testbed.net.probe import probe

    if not probe().netem:
        pytest.skip("this kernel has no netem qdisc (sch_netem): link delay/jitter/loss cannot "
                    "be emulated here; the error path is tested in test_bad_input.py")


def test_link_delay_adds_round_trip_time(bring_up):
    _netem_or_skip()
    ledger = bring_up("delay", "nodes: {a: {}, b: {}}\n"
                               "links: [{between: [a, b], bw: 10, delay: '20ms'}]")
    rtt = measure.ping_ms(ledger.name, "a", "b", count=10)
    assert 40 <= rtt < 45, rtt  # 20 ms each way


def test_link_loss_drops_packets(bring_up):
    _netem_or_skip()
    ledger = bring_up("loss", "nodes: {a: {}, b: {}}\n"
                              "links: [{between: [a, b], loss: '20%'}]")
    from testbed import api

    res = api.run_in_node(ledger.name, "a", ["ping", "-c", "200", "-i", "0.01", "-q", "10.0.0.2"])
    received = int(res.stdout.split(" received")[0].split()[-1])
    assert 100 < received < 190, res.stdout  # 20% each way: ~64% round trips succeed


def test_steal_is_a_share_of_this_machines_cpu_time():
    """The hypervisor's steal (read to tell a starved measurement from a wrong shaper) is a
    share in [0, 1] of the CPU time that passed, also over a busy block."""
    import time

    with measure.cpu_steal() as steal:
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            pass
    assert 0 <= steal.share <= 1
    stolen, idle, total = cpu_jiffies()
    assert 0 <= stolen <= total and 0 <= idle <= total and total > 0
