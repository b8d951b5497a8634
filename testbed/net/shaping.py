"""Link shaping: LinkShape -> HTB (rate) + leaf qdisc (pfifo, or netem for delay/jitter/loss),
applied with pyroute2 in one netlink session and read back from the kernel.

The configured rate is the line rate of Ethernet frames (HTB counts the 14-byte header), so
ideal TCP goodput is rate x 1448/1514 with a 1500-byte MTU and TCP timestamps.
Burst is 5 ms of traffic (at least two frames): with less, a timer firing late on a busy host
loses tokens and the link runs below its rate. The leaf queue holds about 100 ms at the link
rate (8-1000 frames): slow-start overflow recovers quickly, and data held back by a loss
is small against a 10 s measurement window, even on slow links.
"""

from __future__ import annotations

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from testbed.errors import NetworkError
from testbed.htb import htb_params, tbf_leaf
from testbed.topology.model import LinkShape

ROOT = 0x10000  # 1:
LEAF_CLASS = 0x10001  # 1:1, the link's class
LEAF_QDISC = 0x100000  # 10:


def apply(ipr: IPRoute, ifindex: int, shape: LinkShape, netem_ok: bool) -> None:
    """Shape the egress of one interface; raises NetworkError naming the interface on failure."""
    if shape.needs_netem and not netem_ok:
        raise NetworkError("delay/jitter/loss need the netem qdisc, which this kernel lacks")
    try:
        if shape.bw_mbit is not None:
            p = htb_params(shape.bw_mbit)
            ipr.tc("replace", "htb", ifindex, ROOT, default=LEAF_CLASS & 0xFFFF)
            ipr.tc("replace-class", "htb", ifindex, LEAF_CLASS, parent=ROOT,
                   rate=f"{p.rate_bps}bit", ceil=f"{p.rate_bps}bit", burst=p.burst_bytes,
                   cburst=p.burst_bytes, quantum=p.quantum_bytes)
            parent, limit = LEAF_CLASS, p.queue_frames
        else:
            parent, limit = None, 1000
        if shape.needs_netem:
            kw = dict(delay=int(shape.delay_ms * 1000), jitter=int(shape.jitter_ms * 1000),
                      loss=shape.loss_pct, limit=max(limit, 1000))
            if parent is None:
                ipr.tc("replace", "netem", ifindex, ROOT, **kw)
            else:
                ipr.tc("replace", "netem", ifindex, LEAF_QDISC, parent=parent, **kw)
        elif parent is not None:
            ipr.tc("replace", "tbf", ifindex, LEAF_QDISC, parent=parent, **tbf_leaf(p))
    except NetlinkError as e:
        raise NetworkError(f"tc on interface {ifindex}: {e.args[-1]}") from None


def change(ipr: IPRoute, ifindex: int, old: LinkShape, new: LinkShape, netem_ok: bool) -> None:
    """Re-shape one egress in place: the existing HTB class and leaf queue are changed, never
    deleted, so packets queued at the moment of the change stay queued (no qdisc rebuilt, no
    drop caused by the change). Only a change of structure (shaped <-> unshaped, netem added
    or removed) replaces the leaf, which is what the kernel allows."""
    if new.needs_netem and not netem_ok:
        raise NetworkError("delay/jitter/loss need the netem qdisc, which this kernel lacks")
    if (old.bw_mbit is None) != (new.bw_mbit is None) or old.needs_netem != new.needs_netem:
        apply(ipr, ifindex, new, netem_ok)
        return
    try:
        if new.bw_mbit is not None:
            p = htb_params(new.bw_mbit)
            ipr.tc("change-class", "htb", ifindex, LEAF_CLASS, parent=ROOT,
                   rate=f"{p.rate_bps}bit", ceil=f"{p.rate_bps}bit", burst=p.burst_bytes,
                   cburst=p.burst_bytes, quantum=p.quantum_bytes)
        if new.needs_netem:
            kw = dict(delay=int(new.delay_ms * 1000), jitter=int(new.jitter_ms * 1000),
                      loss=new.loss_pct, limit=1000)
            if new.bw_mbit is None:
                ipr.tc("change", "netem", ifindex, ROOT, **kw)
            else:
                ipr.tc("change", "netem", ifindex, LEAF_QDISC, parent=LEAF_CLASS, **kw)
        elif new.bw_mbit is not None:
            ipr.tc("change", "tbf", ifindex, LEAF_QDISC, parent=LEAF_CLASS,
                   **tbf_leaf(htb_params(new.bw_mbit)))
    except NetlinkError as e:
        raise NetworkError(f"tc change on interface {ifindex}: {e.args[-1]}") from None


def netem_values(qdisc) -> dict[str, float]:
    """delay/jitter (ms) and loss (%) of a netem qdisc as the kernel reports them."""
    from pyroute2.netlink.rtnl.tcmsg.common import tick_in_usec

    opts = qdisc.get_attr("TCA_OPTIONS")
    return {"delay_ms": opts["delay"] / tick_in_usec / 1000,
            "jitter_ms": opts["jitter"] / tick_in_usec / 1000,
            "loss_pct": opts["loss"] / (2**32 - 1) * 100}


def read_back(ipr: IPRoute, indexes: list[int]) -> dict[int, dict]:
    """What the kernel holds, per interface index: HTB rate (bit/s), leaf qdisc kind and, for
    netem, its delay, jitter and loss.

    Classes are dumped per interface (the kernel needs an index), qdiscs once for all.
    """
    out: dict[int, dict] = {}
    classes = [c for i in indexes for c in ipr.get_classes(index=i)]
    for cls in classes:
        if cls["handle"] == LEAF_CLASS and cls.get_attr("TCA_KIND") == "htb":
            parms = cls.get_nested("TCA_OPTIONS", "TCA_HTB_PARMS")
            rate64 = cls.get_nested("TCA_OPTIONS", "TCA_HTB_RATE64")
            out.setdefault(cls["index"], {"rate_bps": None, "leaf": None})["rate_bps"] = (
                (rate64 or parms["rate"]) * 8)
    for q in ipr.get_qdiscs():
        kind = q.get_attr("TCA_KIND")
        if q["handle"] in (LEAF_QDISC, ROOT) and kind != "htb":
            entry = out.setdefault(q["index"], {"rate_bps": None, "leaf": None})
            entry["leaf"] = kind
            if kind == "netem":
                entry["netem"] = netem_values(q)
    return out


def verify(held: dict[int, dict], ifindex: int, ifname: str, shape: LinkShape) -> None:
    """Raise unless the kernel holds the shaping that was asked for (never run unshaped).
    `held` is what read_back() returned after all interfaces were shaped."""
    got = held.get(ifindex, {"rate_bps": None, "leaf": None})
    if shape.bw_mbit is not None:
        want = htb_params(shape.bw_mbit).rate_bps
        if got["rate_bps"] is None or abs(got["rate_bps"] - want) > max(8, want * 1e-3):
            raise NetworkError(f"{ifname}: kernel holds rate {got['rate_bps']} bit/s, "
                               f"asked {want}")
    if shape.needs_netem and got["leaf"] != "netem":
        raise NetworkError(f"{ifname}: netem was not applied (kernel holds {got['leaf']})")
    if shape.needs_netem:
        held_values = got.get("netem", {})
        for key, want in (("delay_ms", shape.delay_ms), ("jitter_ms", shape.jitter_ms),
                          ("loss_pct", shape.loss_pct)):
            have = held_values.get(key)
            if have is None or abs(have - want) > max(0.01, 0.01 * want):
                raise NetworkError(f"{ifname}: the kernel holds netem {key} {have}, asked {want}")
