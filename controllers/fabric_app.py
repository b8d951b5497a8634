"""os-ken app: proactive routing for a testbed fabric and per-flow paths on request.

It knows the topology from the testbed (fabric.json in the state directory): no discovery and no
flooding. On each switch it installs one IPv4 and one ARP rule per destination (shortest paths,
see testbed.routing), so ARP requests travel to their target like unicast. Per-flow paths match
the 5-tuple plus the in_port at every hop, in both directions, with a higher priority. Every
change is confirmed with an OpenFlow barrier before it is reported done; flows are kept in
flows.json so that a restarted controller re-installs them.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
from pathlib import Path

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.ofproto import ofproto_v1_3

from controllers.ofwire import route_rules
from testbed.errors import FlowError
from testbed.net.ledger import write_private
from testbed.routing import (
    PROTOCOLS,
    Fabric,
    FlowSpec,
    duplicate_of,
    hop_ports,
    next_hops,
    path_crosses,
    switch_rules,
    validate_flow,
)

ROUTE_PRIORITY = 100
FLOW_PRIORITY = 1000
ROUTE_COOKIE = 1
BARRIER_TIMEOUT_S = 20.0
LOG = logging.getLogger("testbed.controller")


def flow_cookie(flow_id: int, reverse: bool) -> int:
    """Cookie of a flow's rules: id in the high bits, direction in bit 0 (1 = routes)."""
    return (flow_id << 8) | (0x11 if reverse else 0x10)


class FabricApp(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.state_dir = Path(os.environ["TESTBED_STATE_DIR"])
        self.fabric = Fabric.from_dict(json.loads((self.state_dir / "fabric.json").read_text()))
        self.down: frozenset[frozenset[str]] = frozenset()  # links whose port is down
        self.routed_down: frozenset[frozenset[str]] = frozenset()  # routes avoid these now
        self.rerouting = threading.Lock()  # reroutes run one at a time, in event order
        self.hops = next_hops(self.fabric)
        self.flows: dict[int, FlowSpec] = self._load_flows()
        self.datapaths: dict[str, object] = {}
        self.ready: set[str] = set()
        self.lock = threading.RLock()
        self.save_lock = threading.Lock()
        self.waiters: dict[tuple[int, int], threading.Event] = {}
        self.errors: dict[tuple[int, int], str] = {}
        self.replies: dict[tuple[int, int], list] = {}

    # ---- switch lifecycle -------------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def on_features(self, ev) -> None:
        dp = ev.msg.datapath
        node = self.fabric.by_dpid(dp.id)
        if node is None:
            LOG.warning("switch %016x is not part of this testbed", dp.id)
            return
        with self.lock:
            self.datapaths[node.name] = dp
            self.ready.discard(node.name)
        threading.Thread(target=self._configure, args=(node.name, dp), daemon=True).start()

    def _configure(self, node: str, dp) -> None:
        """Wipe the switch, install default routes and this switch's flow rules, confirm."""
        parser, ofp = dp.ofproto_parser, dp.ofproto
        dp.send_msg(parser.OFPFlowMod(dp, command=ofp.OFPFC_DELETE, table_id=ofp.OFPTT_ALL,
                                      out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY))
        with self.lock:
            hops = self.hops
        buf, sent = route_rules(list(switch_rules(self.fabric, node, hops)), ROUTE_PRIORITY,
                                ROUTE_COOKIE, dp.xid, ofp.MAX_XID)
        if sent:  # every default route in one write (see controllers/ofwire.py)
            dp.xid = sent[-1]
            dp.send(buf)
        xids = set(sent)
        with self.lock:
            flows = list(self.flows.values())
        for flow in flows:
            for rule in self._rules(flow):
                if rule[0] == node:
                    xids.add(self._add(dp, FLOW_PRIORITY, rule[1], rule[2], rule[3]))
        try:
            self.barrier(dp, xids)
        except RuntimeError as e:
            LOG.error("switch %s: %s", node, e)
            return
        with self.lock:
            self.ready.add(node)
        LOG.info("switch %s ready", node)

    def _route(self, dp, ip: str, port: int) -> int:
        """The default route to `ip` (IPv4 and ARP rules); returns the last message's xid."""
        parser = dp.ofproto_parser
        actions = [parser.OFPActionOutput(port)]
        xid = 0
        for match in (parser.OFPMatch(eth_type=0x0800, ipv4_dst=ip),
                      parser.OFPMatch(eth_type=0x0806, arp_tpa=ip)):
            xid = self._add(dp, ROUTE_PRIORITY, match, actions, ROUTE_COOKIE)
        return xid

    # ---- links going down and up: default routes follow ------------------------------------
    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def on_port_status(self, ev) -> None:
        """A link port changed state (set down outside the testbed, or by a timeline): routes
        are recomputed around down links and re-installed where they changed."""
        dp, desc = ev.msg.datapath, ev.msg.desc
        node = self.fabric.by_dpid(dp.id)
        if node is None:
            return
        peer = next((nb for nb, p in self.fabric.ports[node.name].items()
                     if p == desc.port_no), None)
        if peer is None:
            return
        ofp = dp.ofproto
        is_down = bool(desc.state & ofp.OFPPS_LINK_DOWN or desc.config & ofp.OFPPC_PORT_DOWN)
        link = frozenset((node.name, peer))
        with self.lock:
            down = self.down | {link} if is_down else self.down - {link}
            if down == self.down:
                return
            self.down = frozenset(down)
        LOG.warning("link %s-%s is %s", node.name, peer, "DOWN" if is_down else "up again")
        threading.Thread(target=self._reroute, daemon=True).start()

    def _reroute(self) -> None:
        """Install the routes around the current down links, confirmed by barriers; only
        then are those links reported down (health's links_down means "routed around")."""
        with self.rerouting:
            self._reroute_once()

    def _reroute_once(self) -> None:
        with self.lock:
            down = self.down
            old, new = self.hops, next_hops(self.fabric, down)
            self.hops = new
            switches = dict(self.datapaths)
        for node, dp in switches.items():
            old_rules = dict(switch_rules(self.fabric, node, old))
            new_rules = dict(switch_rules(self.fabric, node, new))
            xids = {self._route(dp, ip, port) for ip, port in new_rules.items()
                    if old_rules.get(ip) != port}
            parser, ofp = dp.ofproto_parser, dp.ofproto
            for ip in set(old_rules) - set(new_rules):  # cut off: drop rather than misroute
                for match in (parser.OFPMatch(eth_type=0x0800, ipv4_dst=ip),
                              parser.OFPMatch(eth_type=0x0806, arp_tpa=ip)):
                    xids.add(self._send(dp, parser.OFPFlowMod(
                        dp, command=ofp.OFPFC_DELETE_STRICT, priority=ROUTE_PRIORITY,
                        match=match, table_id=0, out_port=ofp.OFPP_ANY,
                        out_group=ofp.OFPG_ANY)))
            if xids:
                try:
                    self.barrier(dp, xids)
                except RuntimeError as e:
                    LOG.error("rerouting at %s: %s", node, e)
        self._purge_datapath_flows()
        with self.lock:
            self.routed_down = down

    def _purge_datapath_flows(self) -> None:
        """Make every ovs-vswitchd serving this testbed drop its cached datapath flows, so the
        next packets are translated against the new routes. Needed: OVS 3.1's userspace
        datapath was seen keeping a flow that had become a drop while its route was gone
        after the route came back (a link down and up again; tests/test_fabric_check.py).
        The host's daemon is purged too (other testbeds' next packets take the slow path
        once; nothing is lost)."""
        targets = [["-t", str(p)] for p in sorted(self.state_dir.glob("ovs*/ovs-vswitchd.ctl"))]
        for target in [*targets, []]:
            res = subprocess.run(["ovs-appctl", "--timeout=10", *target, "revalidator/purge"],
                                 capture_output=True, text=True, check=False)
            if res.returncode != 0:
                LOG.error("purging datapath flows (%s): %s", target or "host",
                          res.stderr.strip()[:200])

    # ---- OpenFlow helpers -------------------------------------------------------------------
    def _send(self, dp, msg) -> int:
        dp.set_xid(msg)
        dp.send_msg(msg)
        return msg.xid

    def _add(self, dp, priority, match, actions, cookie, command=None) -> int:
        parser, ofp = dp.ofproto_parser, dp.ofproto
        inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)]
        msg = parser.OFPFlowMod(dp, cookie=cookie, priority=priority, match=match,
                                instructions=inst,
                                command=ofp.OFPFC_ADD if command is None else command)
        dp.set_xid(msg)
        dp.send_msg(msg)
        return msg.xid

    def _expect(self, dp, msg) -> threading.Event:
        dp.set_xid(msg)
        ev = threading.Event()
        with self.lock:
            self.waiters[(dp.id, msg.xid)] = ev
        return ev

    def barrier(self, dp, xids: set[int]) -> None:
        """Block until the switch has processed everything sent before; raise if it rejected
        one of `xids` (the messages of this batch: another batch's errors are its own)."""
        msg = dp.ofproto_parser.OFPBarrierRequest(dp)
        ev = self._expect(dp, msg)
        dp.send_msg(msg)
        if not ev.wait(BARRIER_TIMEOUT_S):
            raise RuntimeError(f"switch {dp.id:016x} did not confirm within {BARRIER_TIMEOUT_S}s")
        with self.lock:
            self.waiters.pop((dp.id, msg.xid), None)
            mine = [k for k in self.errors if k[0] == dp.id and k[1] in xids]
            errs = [self.errors.pop(k) for k in mine]
        if errs:
            raise RuntimeError(f"switch {dp.id:016x} rejected rules: {errs[0]}")

    def request(self, dp, msg) -> list:
        """Send a multipart request and return all reply bodies."""
        ev = self._expect(dp, msg)
        with self.lock:
            self.replies[(dp.id, msg.xid)] = []
        dp.send_msg(msg)
        if not ev.wait(BARRIER_TIMEOUT_S):
            raise RuntimeError(f"switch {dp.id:016x} did not answer")
        with self.lock:
            self.waiters.pop((dp.id, msg.xid), None)
            return self.replies.pop((dp.id, msg.xid), [])

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def on_barrier(self, ev) -> None:
        self._wake(ev.msg.datapath.id, ev.msg.xid)

    @set_ev_cls([ofp_event.EventOFPFlowStatsReply, ofp_event.EventOFPPortStatsReply],
                MAIN_DISPATCHER)
    def on_stats(self, ev) -> None:
        key = (ev.msg.datapath.id, ev.msg.xid)
        with self.lock:
            if key in self.replies:
                self.replies[key].extend(ev.msg.body)
        if not ev.msg.flags & ev.msg.datapath.ofproto.OFPMPF_REPLY_MORE:
            self._wake(*key)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def on_error(self, ev) -> None:
        with self.lock:
            self.errors[(ev.msg.datapath.id, ev.msg.xid)] = f"type={ev.msg.type} code={ev.msg.code}"
        LOG.error("switch %016x error xid=%s type=%s code=%s", ev.msg.datapath.id, ev.msg.xid,
                  ev.msg.type, ev.msg.code)

    def _wake(self, dpid: int, xid: int) -> None:
        with self.lock:
            ev = self.waiters.get((dpid, xid))
        if ev:
            ev.set()

    # ---- per-flow rules ---------------------------------------------------------------------
    def _rules(self, flow: FlowSpec) -> list[tuple[str, object, list, int]]:
        """(node, match, actions, cookie) for both directions of a flow."""
        out = []
        src, dst = self.fabric.nodes[flow.src], self.fabric.nodes[flow.dst]
        proto = PROTOCOLS[flow.proto]
        for reverse in (False, True):
            path = tuple(reversed(flow.path)) if reverse else flow.path
            a, b = (dst, src) if reverse else (src, dst)
            sport, dport = (flow.dport, flow.sport) if reverse else (flow.sport, flow.dport)
            for node, in_port, out_port in hop_ports(self.fabric, path):
                dp = self.datapaths.get(node)
                if dp is None:
                    continue
                fields = {"in_port": in_port, "eth_type": 0x0800, "ip_proto": proto,
                          "ipv4_src": a.ip, "ipv4_dst": b.ip}
                if sport is not None:
                    fields[f"{flow.proto}_src"] = sport
                if dport is not None:
                    fields[f"{flow.proto}_dst"] = dport
                match = dp.ofproto_parser.OFPMatch(**fields)
                actions = [dp.ofproto_parser.OFPActionOutput(out_port)]
                out.append((node, match, actions, flow_cookie(flow.id, reverse)))
        return out

    def add_flows(self, specs: list[FlowSpec]) -> list[FlowSpec]:
        """Validate, install and confirm a batch; on any failure remove the whole batch."""
        with self.lock:
            if len(self.ready) < len(self.fabric.nodes):
                raise RuntimeError("not all switches are connected yet")
            next_id = max(self.flows, default=0) + 1
            batch: list[FlowSpec] = []
            for i, spec in enumerate(specs):
                validate_flow(self.fabric, spec)
                same = duplicate_of(spec, [*self.flows.values(), *batch])
                if same is not None:
                    raise FlowError(
                        f"{spec.proto} {spec.src}:{spec.sport or '*'} -> {spec.dst}:"
                        f"{spec.dport or '*'} is already steered by flow "
                        f"{same.id or '(in this batch)'} ({same.src} -> {same.dst}, path "
                        f"{','.join(same.path)}); one flow "
                        "covers both directions: remove it first (`testbed flow rm "
                        f"{same.id}`) or give --reverse-rate for the replies")
                batch.append(FlowSpec(**{**spec.to_dict(), "path": spec.path, "id": next_id + i}))
            self.flows.update({f.id: f for f in batch})
        touched: dict[str, tuple[object, set[int]]] = {}
        try:
            for f in batch:
                for node, match, actions, cookie in self._rules(f):
                    dp = self.datapaths[node]
                    xid = self._add(dp, FLOW_PRIORITY, match, actions, cookie)
                    touched.setdefault(node, (dp, set()))[1].add(xid)
            for dp, xids in touched.values():
                self.barrier(dp, xids)
        except Exception:
            self.remove_flows([f.id for f in batch])
            raise
        self._save_flows()
        return batch

    def remove_flows(self, ids: list[int]) -> list[int]:
        with self.lock:
            gone = [self.flows.pop(i) for i in ids if i in self.flows]
        touched: dict[str, tuple[object, set[int]]] = {}
        for f in gone:
            for node in set(f.path):
                dp = self.datapaths.get(node)
                if dp is None:
                    continue
                parser, ofp = dp.ofproto_parser, dp.ofproto
                for reverse in (False, True):
                    xid = self._send(dp, parser.OFPFlowMod(
                        dp, command=ofp.OFPFC_DELETE, table_id=ofp.OFPTT_ALL,
                        cookie=flow_cookie(f.id, reverse), cookie_mask=0xFFFFFFFFFFFFFFFF,
                        out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY))
                    touched.setdefault(node, (dp, set()))[1].add(xid)
        for dp, xids in touched.values():
            self.barrier(dp, xids)
        self._save_flows()
        return [f.id for f in gone]

    def flow_counters(self) -> list[dict]:
        """Every flow with, per node of its path, the bytes/packets its switch forwarded."""
        with self.lock:
            flows = list(self.flows.values())
        stats: dict[tuple[str, int], tuple[int, int]] = {}
        for node in sorted({n for f in flows for n in f.path}):
            dp = self.datapaths.get(node)
            if dp is None:
                continue
            parser, ofp = dp.ofproto_parser, dp.ofproto
            req = parser.OFPFlowStatsRequest(dp, table_id=ofp.OFPTT_ALL, out_port=ofp.OFPP_ANY,
                                             out_group=ofp.OFPG_ANY)
            for s in self.request(dp, req):
                if s.priority == FLOW_PRIORITY:
                    prev = stats.get((node, s.cookie), (0, 0))
                    stats[(node, s.cookie)] = (prev[0] + s.byte_count, prev[1] + s.packet_count)
        out = []
        for f in flows:
            d = f.to_dict()
            fwd, rev = flow_cookie(f.id, False), flow_cookie(f.id, True)
            d["hops"] = [{"node": n, "bytes": stats.get((n, fwd), (0, 0))[0],
                          "packets": stats.get((n, fwd), (0, 0))[1],
                          "reverse_bytes": stats.get((n, rev), (0, 0))[0],
                          "reverse_packets": stats.get((n, rev), (0, 0))[1]} for n in f.path]
            d["state"] = "broken" if path_crosses(f.path, self.down) else "ok"
            out.append(d)
        return out

    def port_counters(self) -> dict:
        """Per node, per port (named by the neighbour or 'host'): tx/rx bytes and packets."""
        out = {}
        for node, dp in sorted(self.datapaths.items()):
            parser, ofp = dp.ofproto_parser, dp.ofproto
            names = {p: nb for nb, p in self.fabric.ports[node].items()}
            names[1] = "host"
            ports = {}
            for s in self.request(dp, parser.OFPPortStatsRequest(dp, 0, ofp.OFPP_ANY)):
                if s.port_no in names:
                    ports[names[s.port_no]] = {"tx_bytes": s.tx_bytes, "rx_bytes": s.rx_bytes,
                                               "tx_packets": s.tx_packets,
                                               "rx_packets": s.rx_packets,
                                               "tx_dropped": s.tx_dropped}
            out[node] = ports
        return out

    def health(self) -> dict:
        with self.lock:
            return {"expected": len(self.fabric.nodes), "connected": len(self.datapaths),
                    "ready": len(self.ready), "flows": len(self.flows), "pid": os.getpid(),
                    "links_down": sorted(sorted(lk) for lk in self.routed_down)}

    # ---- persistence ------------------------------------------------------------------------
    def _load_flows(self) -> dict[int, FlowSpec]:
        path = self.state_dir / "flows.json"
        if not path.exists():
            return {}
        return {f["id"]: FlowSpec.from_dict(f) for f in json.loads(path.read_text())}

    def _save_flows(self) -> None:
        """Serialised (one writer at a time, each with its own temporary file): concurrent
        API calls never race on the file, and the last write holds the latest flows."""
        with self.save_lock:
            with self.lock:
                data = [f.to_dict() for f in sorted(self.flows.values(), key=lambda f: f.id)]
            write_private(self.state_dir / "flows.json", json.dumps(data))

