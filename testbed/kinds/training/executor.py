"""The training kind's run on a testbed: profile the model inside every taking-part node,
decide each device's cut and bandwidth, enforce one rate-capped flow per device to the server
(both directions), and train for real: the server and device processes of
workloads/split_train.py exchange activations, gradients and weights over the emulated links.

The shared loop sees one unit, the whole training; rounds are recorded by the processes
(server: when each device's round began and ended, the averaged model's test accuracy;
devices: compute and communication seconds, bytes) and become rounds.csv and devices.csv
beside the prediction of the decision.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from testbed import nodes
from testbed.errors import CapabilityError, InputError, NetworkError
from testbed.experiment.single import SingleUnit
from testbed.kinds.streams.wiring import tc_rate_mbit
from testbed.kinds.training.decision import Decidable, TrainingDecision, repriced
from testbed.kinds.training.problem import BlockProfile, Problem, build
from testbed.kinds.training.spec import (
    SERVER_MODES,
    Workload,
    check_server_share,
    digits_partition,
)
from testbed.net import cgroups
from testbed.nodes.base import UNPRIVILEGED_UID
from testbed.routing import FlowSpec
from testbed.schedulers.plan import Plan

PROFILE_TIMEOUT_S = 600.0
MIN_DUTY = 0.02  # below this share of the round a node's load is left out of the re-profile
# A device's planned waits in its second profile are cut to this: its CPU quota refills every
# period (10 ms), so a longer wait changes only how long profiling takes (all-local VGG-16
# devices wait about two minutes per round for their weights)
PROFILE_WAIT_CAP_S = 10.0


class Training(SingleUnit):
    kind = "training"
    unit_name = "training"
    program = "split_train.py"

    def torch_steps(self) -> bool:
        return True

    def __init__(self, ledger, units: list, opts, progress=lambda s: None) -> None:
        super().__init__(ledger, units, opts, progress)
        self.w: Workload = units[0]
        self.ips = {n: v["ip"] for n, v in ledger.topology["nodes"].items()}
        self.cores = {n: v.get("cpu") or 1.0 for n, v in ledger.topology["nodes"].items()}
        self.line_bw = {frozenset(lk["between"]): lk["bw_mbit"]
                        for lk in ledger.topology["links"]}
        self.block_profiles: dict[str, BlockProfile] = {}
        self.decision: TrainingDecision | None = None  # as predicted at the planned load
        self.decided: TrainingDecision | None = None  # as the strategy predicted it
        self.raw_profiles: dict[str, BlockProfile] = {}
        self.decided_profiles: dict[str, BlockProfile] = {}
        self.duties: dict[str, float] = {}
        self.patterns: dict[str, dict] = {}  # device -> its planned round (second profile)
        self.problem: Problem | None = None
        self.server_mode = opts.server_mode or self.w.spec.server_mode
        if self.server_mode not in SERVER_MODES:
            raise InputError(f"--server-mode {self.server_mode!r}: use one of "
                             f"{', '.join(SERVER_MODES)}")
        self.per_device = self.w.spec.server_share == "per-device"
        check_server_share(self.w.spec.server_share, self.server_mode,
                           f"{self.w.source} with --server-mode {self.server_mode}")
        self.slices: dict[str, str] = {}  # device -> its server process's cgroup.procs

    def _server_slices(self) -> dict[str, str]:
        """server_share: per-device: a CPU slice of the server node per device, 1/M of it."""
        server = self.w.spec.server
        kind = nodes.of_node(self.ledger, server)
        if kind.name != "host" or nodes.cluster_host(self.ledger, server) is not None:
            raise CapabilityError(
                f"{self.w.source}: server_share: per-device slices the server's CPU with "
                f"cgroups this machine holds; the server {server} is a {kind.name} node"
                f"{' on a host of a cluster' if kind.name == 'host' else ''}; fix: make the "
                "server a host node built on this machine, or use server_share: shared")
        share = self.cores[server] / len(self.w.devices)
        owner = UNPRIVILEGED_UID if self.opts.unprivileged else None
        return cgroups.cpu_slices(self.ledger.names, server, dict.fromkeys(self.w.devices, share),
                                  owner)

    def _threads(self, node: str) -> int:
        return max(1, round(self.cores[node]))

    # ---- before the clock: profiles and the problem ----------------------------------------
    def prepare(self) -> None:
        spec = self.w.spec
        if self.per_device:
            self.slices = self._server_slices()
        for node in (spec.server, *self.w.devices):
            if node in self.profile.unable:
                raise NetworkError(f"{self.w.source}: node {node} cannot run tasks: "
                                   f"{self.profile.unable[node]}")
        # every node at once, each busy until all have measured: during the run they share
        # this machine's cores (and OVS) too, and VGG-16's blocks on 0.15-core devices ran
        # 1.25x slower than when profiled alone
        servers = [f"{spec.server}@{d}" for d in self.w.devices] if self.per_device \
            else [spec.server]
        self.progress(f"profiling {spec.model} on {1 + len(self.w.devices)} nodes at once")
        self.raw_profiles = self._profile(dict.fromkeys((*self.w.devices, *servers),
                                                        {"duty": 1.0}))
        self.block_profiles = self.decided_profiles = self._by_node(self.raw_profiles)
        self.problem = self._problem(self.block_profiles)
        self.units = [Decidable(self.w, self.problem)]

    def _profile(self, loads: dict[str, dict]) -> dict[str, BlockProfile]:
        """Per-block profiles taken all at once, each under its load ({"duty": share} or a
        device's round {"pattern": ...}, see split_train.profile) and holding it until all
        have answered. Keys: a device, the server, or `server@device` for the server's slice
        serving that device (server_share: per-device). A device profiled on its round times
        only its own blocks; the blocks past its cut keep their first profile."""
        spec = self.w.spec
        config = {"role": "profile", "model": spec.model, "batch_size": spec.batch_size,
                  "width": self.w.width, "hold": True}
        asked = {}
        for key, load in loads.items():
            node, _, served = key.partition("@")
            where = {"threads": 1, "cpu_slice": self.slices[served]} if served else \
                {"threads": self._threads(node)}
            asked[f"profile.{key}"] = (node, {**config, **where, **load})
        said = self.processes.answers(asked, PROFILE_TIMEOUT_S, together=True)
        out = {}
        for key in loads:
            got = said[f"profile.{key}"]
            k, first = len(got["forward_s"]), self.raw_profiles.get(key)
            out[key] = BlockProfile.from_dict(got) if first is None else BlockProfile(
                tuple(got["forward_s"]) + first.forward_s[k:],
                tuple(got["backward_s"]) + first.backward_s[k:],
                first.activation_bytes, first.param_bytes)
        return out

    def _by_node(self, raw: dict[str, BlockProfile]) -> dict[str, BlockProfile]:
        """One profile per node: the server's slices averaged (they run the same blocks)."""
        server = self.w.spec.server
        out = {d: raw[d] for d in self.w.devices}
        out[server] = BlockProfile.mean([p for k, p in raw.items()
                                         if k.partition("@")[0] == server])
        return out

    def _problem(self, profiles: dict[str, BlockProfile]) -> Problem:
        spec = self.w.spec
        memory = {n: v.memory_bytes for n, v in self.profile.view.nodes.items()}
        return build(self.w.devices, profiles, spec.server, memory, spec.batches_per_round,
                     self.w.total_mbit, one_batch_at_a_time=self.server_mode != "split-nonpipe",
                     server_per_device=self.per_device)

    def _at_planned_load(self, ext: TrainingDecision) -> TrainingDecision:
        """Profile again under the load the decision puts on the machine, and predict the same
        cuts and bandwidths on those profiles. Profiles with every node busy (prepare) were
        right for VGG-16, whose devices compute most of a round, and 10-60% too slow for
        LeNet, whose devices mostly wait on their links. Now each device runs its round as
        planned (its blocks per batch, the planned waits between; see `_round_pattern`), and
        the server (or each slice) computes its predicted share of the round and idles the
        rest. A node (or slice) that computes almost nothing keeps its first profile."""
        server = self.w.spec.server
        rounds = {d: ext.round_shared_predicted_s.get(d, ext.round_predicted_s[d])
                  for d in self.w.devices}
        cycle = max(max(rounds.values()), 1e-12)  # devices wait for the slowest's weights
        share = {d: ext.compute_predicted_s[d] / cycle for d in self.w.devices}
        if self.per_device:
            share |= {f"{server}@{d}": ext.server_compute_predicted_s[d] / cycle
                      for d in self.w.devices}
        else:
            share[server] = sum(ext.server_compute_predicted_s.values()) / cycle
        busy = {k: min(1.0, v) for k, v in share.items() if v >= MIN_DUTY}
        self.progress("profiling again at the planned load ("
                      + ", ".join(f"{k} {v:.0%}" for k, v in busy.items()) + ")")
        self.duties = busy
        self.patterns = {d: self._round_pattern(ext, d, rounds[d], cycle)
                         for d in self.w.devices if d in busy}
        loads = {k: {"pattern": self.patterns[k]} if k in self.patterns else {"duty": v}
                 for k, v in busy.items()}
        self.raw_profiles = {**self.raw_profiles, **self._profile(loads)}
        self.block_profiles = self._by_node(self.raw_profiles)
        return repriced(ext, self._problem(self.block_profiles))

    def _round_pattern(self, ext: TrainingDecision, d: str, round_s: float,
                       cycle_s: float) -> dict:
        """Device d's round as the decision plans it: per batch its blocks, then the wait for
        its activations' transfers and the server's part; after the round's batches the
        weights' transfers and the wait for the slowest device (the server averages when all
        have sent). Waits longer than PROFILE_WAIT_CAP_S are cut to it."""
        p, b, cut = self.problem, self.w.spec.batches_per_round, ext.cuts[d]
        bw = max(ext.bandwidth_mbit[d], 1e-12)
        act_mbit = float(p.activation_mbit[cut - 1]) if p.activation_mbit is not None else 0.0
        weights_s = max(0.0, float(p.C[cut - 1]) - act_mbit) / bw
        between = max(0.0, round_s - ext.compute_predicted_s[d] - weights_s) / b
        return {"cut": cut, "batches": b, "batch_wait_s": min(between, PROFILE_WAIT_CAP_S),
                "round_wait_s": min(max(0.0, cycle_s - round_s) + weights_s,
                                    PROFILE_WAIT_CAP_S)}

    # ---- the decision loop's hooks ---------------------------------------------------------
    def start(self, placed: list, plan: Plan) -> None:
        if not placed:
            return
        self.decision = self.decided = plan.extension
        try:
            ext = self._at_planned_load(self.decided)
        except NetworkError as e:  # a node that cannot profile again: the run fails, whole
            self.status, self.reason = "failed", str(e)
            return
        self.decision, self.status = ext, "running"
        spec = self.w.spec
        specs, labels = [], []
        for f in plan.flows:
            rate = tc_rate_mbit(f.rate_mbit, max(f.volume_bytes, 1), f.path, self.line_bw)
            specs.append(FlowSpec(src=f.src, dst=f.dst, path=f.path, dport=f.port,
                                  rate_mbit=rate, reverse_rate_mbit=rate))
            labels.append({"job": self.w.name, "device": f.src, "rate_mbit_planned":
                           f.rate_mbit})
        self.fs.labels = labels
        failed = self.enforcer.apply([], [(self.fs, specs)])
        if failed:
            self.status, self.reason = "failed", failed[self.fs.owner]
            return
        trace = self.out / "traces"
        data, test = digits_partition(self.w) if spec.dataset == "digits" else \
            ([None] * len(self.w.devices), None)
        common = {"model": spec.model, "width": self.w.width, "lr": spec.lr,
                  "rounds": spec.rounds,
                  "batch_size": spec.batch_size, "batches_per_round": spec.batches_per_round}
        ports = {f.src: f.port for f in plan.flows}
        self.procs["server"] = self.processes.spawn(spec.server, "server", {
            **common, "role": "server", "threads": self._threads(spec.server),
            "server_mode": self.server_mode,
            "trace": str(trace / "server.jsonl"), "test": test,
            "devices": [{"name": d, "cut": ext.cuts[d], "port": ports[d],
                         **({"cpu_slice": self.slices[d]} if d in self.slices else {})}
                        for d in self.w.devices]})
        for i, d in enumerate(self.w.devices):
            part = data[i] or {"samples": 256, "seed": 1000 + i}
            self.procs[f"device.{d}"] = self.processes.spawn(d, f"device.{d}", {
                **common, **part, "role": "device", "name": d, "cut": ext.cuts[d],
                "port": ports[d], "server_ip": self.ips[spec.server], "seed": i,
                "threads": self._threads(d), "trace": str(trace / f"device.{d}.jsonl")})

    def close(self) -> None:
        super().close()
        if self.slices:
            cgroups.remove_cpu_slices(self.ledger.names, self.w.spec.server)

    # ---- results ---------------------------------------------------------------------------
    def write(self) -> pd.DataFrame:
        ext, spec = self.decision, self.w.spec
        server = pd.DataFrame(self.read_trace("server.jsonl"))
        dev = pd.DataFrame([r for d in self.w.devices
                            for r in self.read_trace(f"device.{d}.jsonl")])
        drows, rrows = [], []
        if ext is not None and not server.empty:
            srv = server.set_index(["device", "round"])
            devrec = dev.set_index(["device", "round"]) if not dev.empty else None
            for (d, rnd), s in srv.iterrows():
                r = devrec.loc[(d, rnd)] if devrec is not None and (d, rnd) in devrec.index \
                    else None
                drows.append({
                    "device": d, "round": rnd, "cut": ext.cuts[d], "blocks": ext.blocks,
                    "bandwidth_mbit": ext.bandwidth_mbit[d],
                    "round_time_measured_s": s.t_device_done - s.start,
                    "round_time_predicted_s": ext.round_predicted_s[d],
                    "round_time_predicted_shared_s": ext.round_shared_predicted_s.get(d),
                    "compute_s": None if r is None else r.compute_s,
                    "compute_predicted_s": ext.compute_predicted_s[d],
                    "server_compute_s": s.server_compute_s,
                    "server_compute_predicted_s": ext.server_compute_predicted_s[d],
                    # the rest of the round: transfers (and waiting), beside eq. 4.5's C / B
                    "comm_s": None if r is None else
                    s.t_device_done - s.start - r.compute_s - s.server_compute_s,
                    "comm_predicted_s": ext.comm_predicted_s[d],
                    "bytes_up": None if r is None else r.bytes_up,
                    "bytes_down": None if r is None else r.bytes_down})
            devices = pd.DataFrame(drows)
            t0 = float(server.start.min())
            for rnd, g in server.groupby("round"):
                mine = devices[devices["round"] == rnd]
                measured = float(g.t_device_done.max() - g.start.min())
                rrows.append({
                    "round": rnd, "strategy": ext.strategy, "server_mode": self.server_mode,
                    "server_share": spec.server_share,
                    "model": spec.model, "devices": len(self.w.devices),
                    "total_bandwidth_mbit": self.w.total_mbit,
                    "round_time_measured_s": measured,
                    "round_time_predicted_s": ext.makespan_predicted_s,
                    "fidelity": measured / ext.makespan_predicted_s,
                    # the server shared by the devices at once (not in eq. 4.5)
                    "round_time_predicted_shared_s": ext.makespan_shared_predicted_s,
                    "fidelity_shared": measured / ext.makespan_shared_predicted_s
                    if ext.makespan_shared_predicted_s else None,
                    "aggregate_s": float(g.end.max() - g.t_device_done.max()),
                    "wall_s": float(g.end.max() - t0), "accuracy": float(g.accuracy.iloc[0]),
                    "loss": float(g.loss.iloc[0]),
                    "server_peak_mem_mb": float(g.peak_rss_mb.max()),
                    # parameters held + tensors saved for backward (the thesis's "active")
                    "server_active_peak_mb": float(g.active_peak_mb.max()),
                    "bytes_sent": float(mine.bytes_up.sum() + mine.bytes_down.sum())})
        devices = pd.DataFrame(drows)
        rounds = pd.DataFrame(rrows)
        devices.to_csv(self.out / "devices.csv", index=False)
        rounds.to_csv(self.out / "rounds.csv", index=False)
        for name, profiles in (("profiles.json", self.block_profiles),
                               ("profiles_decided.json", self.decided_profiles)):
            (self.out / name).write_text(json.dumps(
                {n: p.__dict__ for n, p in profiles.items()}, indent=1, default=list))
        return rounds

    def metadata(self) -> dict[str, Any]:
        spec = self.w.spec
        return {"workload": {"file": self.w.source, "model": spec.model,
                             "server": spec.server, "devices": list(self.w.devices),
                             "rounds": spec.rounds, "batch_size": spec.batch_size,
                             "batches_per_round": spec.batches_per_round,
                             "total_bandwidth_mbit": self.w.total_mbit,
                             "scale_work": spec.scale.work, "width": self.w.width},
                "status": self.status, "reason": self.reason,
                "decision": None if self.decision is None else self.decision.__dict__,
                # the strategy's own prediction, on the profiles taken with every node busy
                "decided": None if self.decided is None else self.decided.__dict__,
                "profile_duty": self.duties, "profile_pattern": self.patterns}
