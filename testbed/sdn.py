"""Client of the controller's flow API, plus per-flow rate enforcement at each flow's source.

A flow's path is installed by the controller (OpenFlow, confirmed by barrier) for both
directions (its replies take the path back); its rate is an HTB class with a u32 filter on the
flow's 5-tuple on the source node's interface (the thesis's network manager does the same with
tc), applied with one netlink session per source node; a reverse rate caps the replies the same
way at the destination.
Adding a batch is all-or-nothing: if any part fails, the paths and classes added are removed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
from collections import defaultdict
from collections.abc import Callable

from testbed import nodes
from testbed.errors import FlowError, NetworkError
from testbed.htb import FlowRate, htb_params
from testbed.net import apisock
from testbed.net.ledger import Ledger
from testbed.routing import PROTOCOLS, Fabric, FlowSpec, default_path, validate_flow

ROOT = 0x10000
CLASS_BASE = 0x100  # flow n -> class 1:(0x100 + n)


def flow_class(flow_id: int) -> int:
    return ROOT | (CLASS_BASE + flow_id)


def flow_filter_prio(flow_id: int) -> int:
    return flow_id % 0xFF00 + 1


def u32_keys(flow: FlowSpec, fabric: Fabric) -> list[str]:
    """u32 selectors (value/mask+offset) for the flow's protocol, addresses and ports."""
    src = int(ipaddress.ip_address(fabric.nodes[flow.src].ip))
    dst = int(ipaddress.ip_address(fabric.nodes[flow.dst].ip))
    keys = [f"0x{PROTOCOLS[flow.proto] << 16:08x}/0x00ff0000+8",
            f"0x{src:08x}/0xffffffff+12", f"0x{dst:08x}/0xffffffff+16"]
    if flow.sport is not None or flow.dport is not None:
        value = ((flow.sport or 0) << 16) | (flow.dport or 0)
        mask = (0xFFFF0000 if flow.sport is not None else 0) | (
            0xFFFF if flow.dport is not None else 0)
        keys.append(f"0x{value:08x}/0x{mask:08x}+20")
    return keys


def _spec(listed: dict) -> FlowSpec:
    """A flow as the controller lists it (with counters and state) -> its FlowSpec."""
    return FlowSpec.from_dict({k: v for k, v in listed.items() if k not in ("hops", "state")})


class FlowClient:
    """Steer flows on a running testbed: paths via the controller, rates via tc."""

    def __init__(self, ledger: Ledger, recover: Callable[[], bool] | None = None) -> None:
        """`recover`, if given, is called when the controller does not answer: it may restart
        it (returning True), after which the call is tried once more."""
        self.ledger = ledger
        self.recover = recover
        self.fabric = Fabric.from_dict(
            json.loads((ledger.names.state_dir / "fabric.json").read_text()))

    # ---- controller API ---------------------------------------------------------------------
    def _call(self, method: str, path: str, body: dict | None = None) -> dict | list:
        try:
            code, answer = apisock.request(self.ledger.names.api_socket, method, path, body)
        except OSError as e:
            if self.recover and self.recover():
                code, answer = self._retry(method, path, body, e)
            else:
                raise self._silent(e) from None
        if code != 200:
            msg = answer.get("error", f"HTTP {code}") if isinstance(answer, dict) else str(code)
            raise (FlowError if code == 400 else NetworkError)(msg)
        return answer

    def _retry(self, method: str, path: str, body: dict | None, first: OSError):
        try:
            return apisock.request(self.ledger.names.api_socket, method, path, body)
        except OSError:
            raise self._silent(first) from None

    def _silent(self, e: OSError) -> NetworkError:
        return NetworkError(f"the controller of {self.ledger.name} does not answer ({e}); "
                            "`testbed status` shows whether it runs, `testbed up` restarts it")

    def default_path(self, src: str, dst: str) -> list[str]:
        for node in (src, dst):
            if node not in self.fabric.nodes:
                raise FlowError(f"unknown node {node!r} (nodes: {', '.join(self.fabric.nodes)})")
        return default_path(self.fabric, src, dst)

    def add(self, specs: list[FlowSpec]) -> list[FlowSpec]:
        """Install paths and rates for a batch of flows; returns them with their ids."""
        for spec in specs:
            validate_flow(self.fabric, spec)
        added = [FlowSpec.from_dict(f) for f in self._call("POST", "/flows", {
            "flows": [s.to_dict() for s in specs]})["flows"]]
        try:
            self._apply_rates(added)
        except Exception:
            for f in added:
                with contextlib.suppress(Exception):
                    self._call("DELETE", f"/flows/{f.id}")
            self._remove_rates(added)
            raise
        return added

    def forget_rates(self, flows: list[FlowSpec]) -> None:
        """Remove the tc classes of flows (with their ids) the controller no longer knows."""
        self._remove_rates(flows)

    def list(self) -> list[dict]:
        return self._call("GET", "/flows")

    def ports(self) -> dict:
        return self._call("GET", "/ports")

    def remove(self, ids: list[int]) -> list[int]:
        flows = {f["id"]: _spec(f)
                 for f in self.list()}
        missing = [i for i in ids if i not in flows]
        if missing:
            raise FlowError(f"no flow with id {missing[0]} (see `testbed flow ls`)")
        self._remove_rates([flows[i] for i in ids])
        removed = []
        for i in ids:
            removed += self._call("DELETE", f"/flows/{i}")["removed"]
        return removed

    def remove_all(self) -> list[int]:
        flows = [_spec(f)
                 for f in self.list()]
        self._remove_rates(flows)
        return self._call("DELETE", "/flows")["removed"]

    # ---- rates (tc at the source node) ------------------------------------------------------
    def _by_source(self, flows: list[FlowSpec]) -> dict[str, list[FlowSpec]]:
        """Each capped direction at the node it leaves: the flow at its source, its replies
        (when a reverse rate is asked) at its destination."""
        out: dict[str, list[FlowSpec]] = defaultdict(list)
        for f in flows:
            if f.rate_mbit is not None:
                out[f.src].append(f)
            if f.reverse_rate_mbit is not None:
                out[f.dst].append(f.reversed())
        return out

    def _rules(self, group: list[FlowSpec]) -> list[FlowRate]:
        return [FlowRate(flow_class(f.id) & 0xFFFF, flow_filter_prio(f.id), f.rate_mbit,
                         u32_keys(f, self.fabric)) for f in group]

    def _apply_rates(self, flows: list[FlowSpec]) -> None:
        """Each source node's kind installs its flows' classes (netlink in a namespace, tc
        over SSH on a device); what the node then holds is read back and checked."""
        for node, group in self._by_source(flows).items():
            held = nodes.on_node_host(self.ledger, node,
                                      nodes.of_node(self.ledger, node).set_flow_rates,
                                      self.ledger, node, self._rules(group))
            verify_rates(node, group, *held)

    def _remove_rates(self, flows: list[FlowSpec]) -> None:
        for node, group in self._by_source(flows).items():
            nodes.on_node_host(self.ledger, node,
                               nodes.of_node(self.ledger, node).remove_flow_rates,
                               self.ledger, node, self._rules(group))

    def rate_classes(self, node: str) -> dict[int, int]:
        """Read back: flow id -> rate in bit/s of its class on the node's interface."""
        rates, _ = nodes.on_node_host(self.ledger, node,
                                      nodes.of_node(self.ledger, node).flow_rates,
                                      self.ledger, node)
        return {m - CLASS_BASE: r for m, r in rates.items() if m >= CLASS_BASE}


def verify_rates(node: str, flows: list[FlowSpec], rates: dict[int, int],
                 targets: set[int]) -> None:
    """Raise unless every flow's class holds its rate and a filter steers traffic into it."""
    for f in flows:
        minor = flow_class(f.id) & 0xFFFF
        want = htb_params(f.rate_mbit).rate_bps
        got = rates.get(minor)
        if got is None or abs(got - want) > max(8, want * 1e-3):
            raise NetworkError(f"flow {f.id} at {node}: the kernel holds rate {got} bit/s, "
                               f"asked {want}")
        if minor not in targets:
            raise NetworkError(f"flow {f.id} at {node}: no filter steers it into its class")
