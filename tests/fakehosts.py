"""Two "hosts" on one machine for split topologies: two network namespaces joined by a veth
pair (the network between the hosts), each holding one address. Each is also wired to this
machine (the driver's, where the controller runs) by a veth pair of its own, with a route to
its address that way: its switches reach the controller over TLS from there, as a host on
another machine would over the LAN. Used by tests and bench/. Everything is named from
`prefix` and removed by close(), also when a test fails."""

from __future__ import annotations

import subprocess

from testbed.naming import NETNS_DIR


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class FakeHosts:
    def __init__(self, prefix: str, subnet: str, mtu: int = 1500) -> None:
        """Hosts a and b: namespaces `<prefix>-hosta`/`-hostb`, addresses <subnet>.1 and .2,
        veth ends `<prefix>mgA`/`mgB` (at most 15 characters) at `mtu`."""
        self.hosts = {h: (f"{prefix}-host{h}", f"{subnet}.{i}", f"{prefix}mg{h.upper()}")
                      for i, h in enumerate("ab", 1)}
        self.mtu = mtu
        third = subnet.rsplit(".", 1)[1]  # the driver's /30 to each host: 172.29.<third>.*
        self.driver = {h: (f"{prefix}dr{h.upper()}", f"172.29.{third}.{4 * i + 1}",
                           f"172.29.{third}.{4 * i + 2}") for i, h in enumerate("ab")}

    def yaml(self, names: tuple[str, str] = ("a", "b")) -> str:
        """The topology file's `hosts:` section, the hosts called `names`."""
        return "hosts:\n" + "".join(f"  {n}: {{address: {addr}, netns: {ns}}}\n"
                                    for n, (ns, addr, _) in zip(names, self.hosts.values(),
                                                                strict=True))

    def namespaces(self) -> dict[str, str]:
        return {h: ns for h, (ns, _, _) in self.hosts.items()}

    def start(self) -> FakeHosts:
        self.close()
        for ns, _, _ in self.hosts.values():
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        (na, _, da), (nb, _, db) = self.hosts.values()
        _ip("link", "add", da, "netns", na, "type", "veth", "peer", db, "netns", nb)
        for ns, addr, dev in self.hosts.values():
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "mtu", str(self.mtu), "up")
        for h, (ns, addr, _) in self.hosts.items():
            dev, mine, theirs = self.driver[h]
            _ip("link", "add", dev, "type", "veth", "peer", "dr0", "netns", ns)
            _ip("addr", "add", f"{mine}/30", "dev", dev)
            _ip("link", "set", dev, "up")
            _ip("-n", ns, "addr", "add", f"{theirs}/30", "dev", "dr0")
            _ip("-n", ns, "link", "set", "dr0", "up")
            _ip("route", "add", f"{addr}/32", "via", theirs)
        return self

    def close(self) -> None:
        for dev, _, _ in self.driver.values():  # not left to the namespaces' deferred cleanup
            subprocess.run(["ip", "link", "del", dev], capture_output=True)
        for ns, _, _ in self.hosts.values():
            if (NETNS_DIR / ns).exists():
                _ip("netns", "del", ns)
