"""HTB parameters for a rate: one function for links, per-flow classes and devices' tunnels,
so every shaper on the testbed behaves alike (a leaf module).

Burst is 5 ms of traffic (at least two frames): with less, a timer firing late on a busy host
loses tokens and the class runs below its rate. The leaf queue holds about 100 ms at the rate
(8-1000 frames).

Every HTB class gets a token-bucket (TBF) leaf at the same rate and burst: on this kernel an
HTB class alone lets traffic that pauses run ahead of its rate (54 kB messages after 80 ms
pauses crossed a 5.2 Mbit/s class at 17-26 Mbit/s on a bare veth pair, and back-to-back at
5.56 where 4.97 was due), while a TBF holds them to it (5.00) and long transfers stay as
exact as before. HTB classifies and shares; the TBF paces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

FRAME_BYTES = 1514


@dataclass(frozen=True)
class HtbParams:
    rate_bps: int  # bits per second
    burst_bytes: int
    quantum_bytes: int
    queue_frames: int


def htb_params(bw_mbit: float) -> HtbParams:
    rate = int(bw_mbit * 1e6)
    burst = max(2 * FRAME_BYTES, rate // 8 // 200)  # 5 ms of traffic: tolerates late timers
    quantum = min(max(FRAME_BYTES, rate // 8 // 100), 60000)
    queue = min(max(8, int(rate / 8 * 0.1 / FRAME_BYTES)), 1000)
    return HtbParams(rate, burst, quantum, queue)


def tbf_leaf(p: HtbParams) -> dict:
    """pyroute2 arguments of the TBF leaf under a class with these parameters."""
    return {"rate": f"{p.rate_bps}bit", "burst": p.burst_bytes,
            "limit": p.queue_frames * FRAME_BYTES}


def tbf_leaf_tc(p: HtbParams) -> str:
    """The same leaf as `tc` arguments, for devices shaped over SSH."""
    return f"tbf rate {p.rate_bps}bit burst {p.burst_bytes} limit {p.queue_frames * FRAME_BYTES}"


def leaf_handle(minor: int) -> int:
    """The handle of flow class 1:`minor`'s TBF leaf (major 0x8000 + minor, never 1:)."""
    return (0x8000 | (minor & 0x7FFF)) << 16


class FlowRate(NamedTuple):
    """One flow's HTB class at its source's egress: class 1:`minor`, steered there by a u32
    filter of priority `prio` matching `keys` ("value/mask+offset")."""

    minor: int
    prio: int
    rate_mbit: float
    keys: list[str]
