"""Turn off transmit checksum offload on an interface (the legacy ETHTOOL_STXCSUM ioctl).

TCP through a userspace-datapath OVS bridge stalls when veths leave checksums to "hardware"
(see PLATFORM.md); with tx checksumming off the kernel also segments in software, so the
bridge and the shapers only ever see MTU-sized frames.
"""

from __future__ import annotations

import array
import fcntl
import socket
import struct

SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x00000017


def disable_tx_checksum(sock: socket.socket, ifname: str) -> None:
    """`sock` is any AF_INET socket in the interface's namespace."""
    value = array.array("I", [ETHTOOL_STXCSUM, 0])
    addr, _ = value.buffer_info()
    ifreq = struct.pack("16sP", ifname.encode(), addr)
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
