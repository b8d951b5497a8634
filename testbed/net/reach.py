"""Reachability and the fabric's own latency, by ICMP echo from one process: a raw socket is
opened inside each node's namespace, probes are sent for chosen (source, destination) pairs
and replies are matched by pair. Thousands of probes take about a second instead of
thousands of `ping` processes.

`up` proves a sample that grows linearly with the topology (`proof_pairs`): both directions
of every link (so each link's veth pair, shaping and both switches carry traffic) and each
node to a few others chosen with a fixed seed (so routes across the fabric are exercised);
`testbed check --all-pairs` proves every pair. Probes go in waves so a large fabric is not
flooded faster than its datapath's slow path sets up new flows.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import socket
import statistics
import struct
import time
from collections.abc import Iterable

from testbed.net import netns

QUIET_S = 0.3
WAVE = 150  # pairs probed at once (see Prober.unreachable)
SAMPLED_PEERS = 3  # per node, beyond its neighbours


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


def proof_pairs(names: list[str], links: Iterable[tuple[str, str]], local: set[str],
                peers: int = SAMPLED_PEERS, seed: str = "") -> list[tuple[str, str]]:
    """Pairs whose echo replies prove the network: every link in both directions, plus each
    node to `peers` others drawn with a seed (stable for a testbed name). Only nodes in
    `local` (a namespace here) send; the others are probed as destinations."""
    rng = random.Random(f"reach:{seed}")
    pairs = set()
    for a, b in links:
        pairs |= {(a, b), (b, a)}
    for a in names:
        others = [b for b in names if b != a]
        pairs |= {(a, b) for b in rng.sample(others, min(peers, len(others)))}
    return sorted((a, b) for a, b in pairs if a in local)


class Prober:
    """Raw ICMP sockets in every local node's namespace, closed on exit."""

    def __init__(self, nodes: dict[str, tuple[str | None, str]]) -> None:
        self.nodes = nodes
        self.socks: dict[str, socket.socket] = {}
        self.by_ip = {ip: name for name, (_, ip) in nodes.items()}
        self.ident = os.getpid() & 0xFFFF

    def __enter__(self) -> Prober:
        try:
            for name, (ns, _) in self.nodes.items():
                if ns is not None:
                    s = netns.open_socket(ns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
                    s.setblocking(False)
                    self.socks[name] = s
        except BaseException:
            self.__exit__()
            raise
        self.owner = {s.fileno(): name for name, s in self.socks.items()}
        return self

    def __exit__(self, *exc) -> None:
        for s in self.socks.values():
            s.close()

    def _drain(self, wait_s: float) -> list[tuple[str, str, float]]:
        """(receiver, replier, arrival time) of the replies that came within `wait_s`."""
        got = []
        ready, _, _ = select.select(list(self.socks.values()), [], [], wait_s)
        for s in ready:
            me = self.owner[s.fileno()]
            while True:
                try:
                    pkt = s.recv(2048)
                except OSError:
                    break
                ihl = (pkt[0] & 0x0F) * 4
                if len(pkt) >= ihl + 8 and pkt[ihl] == 0:
                    src = self.by_ip.get(socket.inet_ntoa(pkt[12:16]))
                    if src:
                        got.append((me, src, time.monotonic()))
        return got

    def unreachable(self, pairs: list[tuple[str, str]], timeout_s: float | None = None,
                    rounds: int = 8) -> list[tuple[str, str]]:
        """The pairs with no echo reply after `rounds` tries. Pairs go in waves of WAVE: a
        userspace datapath handles each new flow's first packets (and their ARP) in its slow
        path, and a burst of several hundred at once stalls it for seconds (measured: 200
        random pairs of a 300-node mesh all answer, 600 at once mostly time out). A try
        ends when no reply came for QUIET_S or three times the slowest reply so far."""
        left = sorted(set(pairs))
        timeout_s = timeout_s or max(20.0, 0.05 * len(left))
        deadline = time.monotonic() + timeout_s
        failed: list[tuple[str, str]] = []
        for i in range(0, len(left), WAVE):
            failed += self._wave(set(left[i:i + WAVE]), deadline, rounds)
        return sorted(failed)

    def _wave(self, pending: set[tuple[str, str]], deadline: float, rounds: int,
              ) -> list[tuple[str, str]]:
        slowest = 0.0
        for r in range(rounds):
            if not pending or time.monotonic() > deadline:
                break
            sent: dict[tuple[str, str], float] = {}
            for a, b in sorted(pending):
                sent[(a, b)] = time.monotonic()
                with contextlib.suppress(OSError):
                    self.socks[a].sendto(_echo(self.ident, r), (self.nodes[b][1], 0))
            last_reply = time.monotonic()
            while pending and time.monotonic() < deadline:
                if time.monotonic() - last_reply > max(QUIET_S, 3 * slowest):
                    break
                took = _take(self._drain(0.02), pending, sent)
                if took is not None:
                    slowest, last_reply = max(slowest, took), time.monotonic()
        return sorted(pending)

    def rtt_ms(self, a: str, b: str, count: int = 10) -> float | None:
        """Median idle round trip a -> b in ms, one probe at a time (None: no reply)."""
        samples = []
        for seq in range(count):
            sent = time.monotonic()
            with contextlib.suppress(OSError):
                self.socks[a].sendto(_echo(self.ident, 1000 + seq), (self.nodes[b][1], 0))
            end = sent + 1.0
            while time.monotonic() < end:
                got = [t for me, src, t in self._drain(0.05) if (me, src) == (a, b)]
                if got:
                    samples.append((got[0] - sent) * 1000)
                    break
        return statistics.median(samples) if samples else None


def _take(replies: list[tuple[str, str, float]], pending: set[tuple[str, str]],
          sent: dict[tuple[str, str], float]) -> float | None:
    """Remove answered pairs from `pending`; the slowest of their round trips (None: none)."""
    rtts = []
    for me, src, t in replies:
        if (me, src) in pending:
            pending.discard((me, src))
            rtts.append(t - sent.get((me, src), t))
    return max(rtts) if rtts else None


def unreachable_pairs(nodes: dict[str, tuple[str | None, str]],
                      pairs: list[tuple[str, str]] | None = None, timeout_s: float | None = None,
                      rounds: int = 8) -> list[tuple[str, str]]:
    """Pairs (src, dst) with no echo reply; all pairs when `pairs` is None. `nodes` maps
    name -> (netns, ip); a node without a namespace here (a physical device) is probed only
    as a destination (its replies prove the way back)."""
    local = [n for n, (ns, _) in nodes.items() if ns is not None]
    if pairs is None:
        pairs = [(a, b) for a in local for b in nodes if a != b]
    with Prober(nodes) as p:
        return p.unreachable(pairs, timeout_s, rounds)
