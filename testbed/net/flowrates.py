"""Per-flow rate classes on a node's eth0, in its network namespace, through netlink: an HTB
class per flow and a u32 filter on the flow's 5-tuple steering it there (the thesis's network
manager does the same with tc). Every change is read back from the kernel by the caller."""

from __future__ import annotations

import contextlib

from pyroute2.netlink.exceptions import NetlinkError

from testbed.errors import NetworkError
from testbed.htb import FlowRate, htb_params, leaf_handle, tbf_leaf
from testbed.net import netns

ETH_P_IP = 0x0800
ROOT = 0x10000


def apply(namespace: str, node: str, flows: list[FlowRate]) -> tuple[dict[int, int], set[int]]:
    """Install the classes and filters; returns what the kernel then holds (see `read`)."""
    with netns.netlink(namespace) as ip:
        idx = ip.link_lookup(ifname="eth0")[0]
        if not any(q["handle"] == ROOT for q in ip.get_qdiscs(index=idx)):
            # no default class: unclassified traffic bypasses shaping entirely
            ip.tc("add", "htb", idx, ROOT, default=0xFFFF)
        for f in flows:
            p = htb_params(f.rate_mbit)  # the same parameters as links and devices
            rate = f"{p.rate_bps}bit"
            try:
                ip.tc("replace-class", "htb", idx, ROOT | f.minor, parent=ROOT, rate=rate,
                      ceil=rate, burst=p.burst_bytes, cburst=p.burst_bytes,
                      quantum=p.quantum_bytes)
                ip.tc("replace", "tbf", idx, leaf_handle(f.minor), parent=ROOT | f.minor,
                      **tbf_leaf(p))  # paces what the class lets through (see htb.py)
                ip.tc("add-filter", "u32", idx, parent=ROOT, prio=f.prio, protocol=ETH_P_IP,
                      target=ROOT | f.minor, keys=f.keys)
            except NetlinkError as e:
                raise NetworkError(f"rate class 1:{f.minor:x} at {node}: {e.args[-1]}") from None
        return _read(ip, idx)


def remove(namespace: str, flows: list[FlowRate]) -> None:
    with netns.netlink(namespace) as ip:
        idx = ip.link_lookup(ifname="eth0")[0]
        for f in flows:
            with contextlib.suppress(NetlinkError):
                ip.tc("del-filter", "u32", idx, parent=ROOT, prio=f.prio, protocol=ETH_P_IP,
                      target=ROOT | f.minor, keys=f.keys)
            with contextlib.suppress(NetlinkError):
                # pyroute2 encodes HTB parameters even for a delete: give it the rate
                ip.tc("del-class", "htb", idx, ROOT | f.minor, parent=ROOT,
                      rate=f"{int(f.rate_mbit * 1e6)}bit")


def read(namespace: str) -> tuple[dict[int, int], set[int]]:
    """(class minor -> rate in bit/s, class minors some u32 filter points to) on eth0."""
    with netns.netlink(namespace) as ip:
        return _read(ip, ip.link_lookup(ifname="eth0")[0])


def _read(ip, idx: int) -> tuple[dict[int, int], set[int]]:
    rates = {}
    for c in ip.get_classes(index=idx):
        if c.get_attr("TCA_KIND") == "htb":
            parms = c.get_nested("TCA_OPTIONS", "TCA_HTB_PARMS")
            rate64 = c.get_nested("TCA_OPTIONS", "TCA_HTB_RATE64")
            rates[c["handle"] & 0xFFFF] = (rate64 or parms["rate"]) * 8
    targets = set()
    for f in ip.get_filters(index=idx, parent=ROOT):
        classid = f.get_nested("TCA_OPTIONS", "TCA_U32_CLASSID")
        if classid:
            targets.add(classid & 0xFFFF)
    return rates, targets
