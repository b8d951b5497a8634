"""Turn off transmit checksum offload, segmentation offloads and receive aggregation on an
interface (the legacy ETHTOOL_STXCSUM / ETHTOOL_STSO / ETHTOOL_SGSO / ETHTOOL_SGRO ioctls).

TCP through a userspace-datapath OVS bridge stalls when veths leave checksums to "hardware"
(see PLATFORM.md); with tx checksumming off the kernel also segments in software, so the
bridge and the shapers only ever see MTU-sized frames. For the same reason a VXLAN port must
not aggregate received segments (GRO): the userspace bridge cannot send a 64 kB frame on.

Segmentation offloads (TSO, GSO) stay on with tx checksumming off on this kernel, and then a
qdisc sees TCP's 64 kB super-packets: HTB lets one through whenever its tokens are positive
and repays the debt later, so traffic that pauses (a message, then waiting for the reply)
repays it while idle and runs at the line's speed, not the class's rate (54 kB messages after
80 ms pauses crossed a 5.2 Mbit/s class at 8.7 Mbit/s). With them off, shapers see frames.
"""

from __future__ import annotations

import array
import fcntl
import socket
import struct

SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x00000017
ETHTOOL_SGRO = 0x0000002C
ETHTOOL_STSO = 0x0000001F
ETHTOOL_SGSO = 0x00000024


def disable_tx_checksum(sock: socket.socket, ifname: str) -> None:
    """`sock` is any AF_INET socket in the interface's namespace."""
    _set(sock, ifname, ETHTOOL_STXCSUM, 0)


def disable_segmentation(sock: socket.socket, ifname: str) -> None:
    """TSO and GSO off: the interface's qdiscs see single frames (see above)."""
    _set(sock, ifname, ETHTOOL_STSO, 0)
    _set(sock, ifname, ETHTOOL_SGSO, 0)


def disable_gro(sock: socket.socket, ifname: str) -> None:
    _set(sock, ifname, ETHTOOL_SGRO, 0)


def _set(sock: socket.socket, ifname: str, command: int, on: int) -> None:
    value = array.array("I", [command, on])
    addr, _ = value.buffer_info()
    ifreq = struct.pack("16sP", ifname.encode(), addr)
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
