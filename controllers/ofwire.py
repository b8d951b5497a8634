"""Default routes as OpenFlow 1.3 bytes, packed directly.

A switch gets two rules per destination (IPv4 and ARP), so a 1,000-node fabric needs two
million FLOW_MOD messages; os-ken builds and serializes each as Python objects (~60 us, the
bulk of `up` past a few hundred nodes), while these rules differ only in an address, a port
and a transaction id. They are packed here with one struct per message, byte for byte what
os-ken would send (tests/test_routing.py compares them), and sent to a switch in one write.
"""

from __future__ import annotations

import ipaddress
import struct

OFP_VERSION = 4  # OpenFlow 1.3
OFPT_FLOW_MOD = 14
OFP_NO_BUFFER = 0xFFFFFFFF
OFPCML_MAX = 0xFFE5  # os-ken's default max_len of an output action
ETH_TYPE_IP, ETH_TYPE_ARP = 0x0800, 0x0806
OXM_ETH_TYPE = 0x80000A02  # class OPENFLOW_BASIC, field 5, 2 bytes
OXM_IPV4_DST = 0x80001804  # field 12, 4 bytes
OXM_ARP_TPA = 0x80002E04  # field 23, 4 bytes

# header | flow_mod fields | match (type 1 = OXM, length 18: eth_type + one address, padded
# to 24) | APPLY_ACTIONS instruction (24) holding one OUTPUT action (16)
_ROUTE = struct.Struct("!BBHI QQBBHHHIIIH2x HH IH I4s 6x HH4x HHIH6x")
ROUTE_LEN = _ROUTE.size  # 96


def route_rules(rules: list[tuple[str, int]], priority: int, cookie: int, first_xid: int,
                max_xid: int = 0xFFFFFFFF) -> tuple[bytes, list[int]]:
    """FLOW_MOD (add) messages sending IPv4 and ARP for each (destination ip, port) out of
    that port; returns the bytes and the xids used (first_xid + 1, ...)."""
    out, xids = [], []
    xid = first_xid
    for ip, port in rules:
        addr = ipaddress.IPv4Address(ip).packed
        for eth_type, oxm in ((ETH_TYPE_IP, OXM_IPV4_DST), (ETH_TYPE_ARP, OXM_ARP_TPA)):
            xid = (xid + 1) & max_xid
            xids.append(xid)
            out.append(_ROUTE.pack(
                OFP_VERSION, OFPT_FLOW_MOD, ROUTE_LEN, xid,
                cookie, 0, 0, 0, 0, 0, priority, OFP_NO_BUFFER, 0, 0, 0,  # out port, group: 0
                1, 18, OXM_ETH_TYPE, eth_type, oxm, addr,
                4, 24, 0, 16, port, OFPCML_MAX))
    return b"".join(out), xids
