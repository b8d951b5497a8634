"""All-pairs reachability by ICMP echo, from one process: a raw socket is opened inside each
node's namespace, every node pings every other, replies are matched by (source, destination).
9,900 probes for 100 nodes take about a second instead of 9,900 `ping` processes."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import time

from testbed.net import netns


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def _echo(ident: int, seq: int) -> bytes:
    hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    payload = b"testbed-reach"
    return struct.pack("!BBHHH", 8, 0, _checksum(hdr + payload), ident, seq) + payload


QUIET_S = 0.3


def unreachable_pairs(nodes: dict[str, tuple[str | None, str]], timeout_s: float = 20.0,
                      rounds: int = 8) -> list[tuple[str, str]]:
    """Pairs (src, dst) with no echo reply. `nodes` maps name -> (netns, ip); a node without a
    namespace here (a physical device) is probed only as a destination (its replies prove the
    way back)."""
    socks: dict[str, socket.socket] = {}
    try:
        for name, (ns, _) in nodes.items():
            if ns is None:
                continue
            s = netns.open_socket(ns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            s.setblocking(False)
            socks[name] = s
        by_ip = {ip: name for name, (_, ip) in nodes.items()}
        owner = {s.fileno(): name for name, s in socks.items()}
        names = list(nodes)
        pending = {(a, b) for a in socks for b in names if a != b}
        ident = os.getpid() & 0xFFFF
        deadline = time.monotonic() + timeout_s
        for r in range(rounds):
            if not pending:
                break
            for a, b in sorted(pending):
                with contextlib.suppress(OSError):
                    socks[a].sendto(_echo(ident, r), (nodes[b][1], 0))
            # a round ends when replies stop coming (first packets wait for ARP and for
            # OVS's slow path, so the first round may lose some)
            last_reply = time.monotonic()
            while pending and time.monotonic() < deadline:
                if time.monotonic() - last_reply > QUIET_S:
                    break
                ready, _, _ = select.select(list(socks.values()), [], [], 0.02)
                for s in ready:
                    me = owner[s.fileno()]
                    while True:
                        try:
                            pkt = s.recv(2048)
                        except OSError:
                            break
                        ihl = (pkt[0] & 0x0F) * 4
                        if len(pkt) >= ihl + 8 and pkt[ihl] == 0:
                            src = socket.inet_ntoa(pkt[12:16])
                            if (me, by_ip.get(src, "")) in pending:
                                pending.discard((me, by_ip[src]))
                                last_reply = time.monotonic()
        return sorted(pending)
    finally:
        for s in socks.values():
            s.close()
