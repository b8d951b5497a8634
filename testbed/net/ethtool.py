"""Turn off transmit checksum offload, and receive aggregation, on an interface (the legacy
ETHTOOL_STXCSUM / ETHTOOL_SGRO ioctls).

TCP through a userspace-datapath OVS bridge stalls when veths leave checksums to "hardware"
(see PLATFORM.md); with tx checksumming off the kernel also segments in software, so the
bridge and the shapers only ever see MTU-sized frames. For the same reason a VXLAN port must
not aggregate received segments (GRO): the userspace bridge cannot send a 64 kB frame on.
"""

from __future__ import annotations

import array
import fcntl
import socket
import struct

SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x00000017
ETHTOOL_SGRO = 0x0000002C


def disable_tx_checksum(sock: socket.socket, ifname: str) -> None:
    """`sock` is any AF_INET socket in the interface's namespace."""
    _set(sock, ifname, ETHTOOL_STXCSUM, 0)


def disable_gro(sock: socket.socket, ifname: str) -> None:
    _set(sock, ifname, ETHTOOL_SGRO, 0)


def _set(sock: socket.socket, ifname: str, command: int, on: int) -> None:
    value = array.array("I", [command, on])
    addr, _ = value.buffer_info()
    ifreq = struct.pack("16sP", ifname.encode(), addr)
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
