"""Named hardware profiles: CPU and memory limits that make a node behave like a given board.

CPU is a fraction of *this host's* cores (so a profile keeps its relative speed on any machine);
memory is the board's own RAM in MB. Relative CPU speeds follow published multi-core CPU
benchmarks of the boards against a 2020s x86 server core count normalised to the host.

| profile          | share of host CPU | memory MB | board                                  |
|------------------|-------------------|-----------|----------------------------------------|
| raspberry-pi     | 0.125             | 4096      | Raspberry Pi 4 B, 4x Cortex-A72 1.5 GHz |
| jetson-nano      | 0.15              | 4096      | Jetson Nano, 4x Cortex-A57 1.43 GHz     |
| jetson-tx2       | 0.25              | 8192      | Jetson TX2, 2x Denver2 + 4x A57         |
| jetson-xavier-nx | 0.35              | 8192      | Jetson Xavier NX, 6x Carmel 1.4 GHz     |
| jetson-agx       | 0.6               | 32768     | Jetson AGX Xavier, 8x Carmel 2.26 GHz   |
| edge-server      | 1.0               | 16384     | a small edge server: the whole host     |
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    host_cpu_share: float
    memory_mb: int

    def cpu_cores(self, host_cores: int | None = None) -> float:
        """CPU limit in cores on a host with `host_cores` cores (default: this host)."""
        cores = host_cores or os.cpu_count() or 1
        return round(self.host_cpu_share * cores, 3)


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("raspberry-pi", 0.125, 4096),
        Profile("jetson-nano", 0.15, 4096),
        Profile("jetson-tx2", 0.25, 8192),
        Profile("jetson-xavier-nx", 0.35, 8192),
        Profile("jetson-agx", 0.6, 32768),
        Profile("edge-server", 1.0, 16384),
    )
}
