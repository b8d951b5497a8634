"""HTB parameters for a rate: one function for links, per-flow classes and devices' tunnels,
so every shaper on the testbed behaves alike (a leaf module).

Burst is 5 ms of traffic (at least two frames): with less, a timer firing late on a busy host
loses tokens and the class runs below its rate. The leaf queue holds about 100 ms at the rate
(8-1000 frames).
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


class FlowRate(NamedTuple):
    """One flow's HTB class at its source's egress: class 1:`minor`, steered there by a u32
    filter of priority `prio` matching `keys` ("value/mask+offset")."""

    minor: int
    prio: int
    rate_mbit: float
    keys: list[str]
