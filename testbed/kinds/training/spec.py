"""Training files (a user-facing contract):

    kind: training
    server: srv                  # aggregates and runs the server-side blocks
    devices: [d1, d2, d3, d4]    # or "*": every other node that can run tasks
    model: lenet                 # lenet | vgg16 | resnet50 | resnet101 (random init)
    dataset: digits              # digits (scikit-learn, offline) | synthetic (seeded images)
    partition: {classes_per_device: 5, seed: 0}   # non-IID, as in the thesis
    batch_size: 32
    batches_per_round: 10
    rounds: 20
    total_bandwidth: 30Mbit      # B: what the devices' links to the server share
    lr: 0.05
    server_mode: split-nonpipe   # or splitpipe-bf | splitpipe-rw (SplitPipe, section 4.4.2)
    server_share: shared         # or per-device: each device's server-side copy gets 1/M of
                                 # the server's CPU (eq. 4.5's premise: it runs as if alone)
    scale: {work: 0.1}           # optional, laptop scale: every layer sqrt(0.1) as wide
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from testbed.errors import InputError
from testbed.topology.loader import parse_model, read_yaml
from testbed.topology.model import Topology
from testbed.topology.schema import Rate, Strict

MODELS = ("lenet", "vgg16", "resnet50", "resnet101")
SERVER_MODES = ("split-nonpipe", "splitpipe-bf", "splitpipe-rw")
TEST_FRACTION = 0.2


class PartitionSpec(Strict):
    classes_per_device: int = Field(5, ge=1, le=10)
    seed: int = 0


class TrainingScale(Strict):
    work: float = Field(1.0, gt=0, le=4, description=(
        "factor on the model's work per batch: every layer's channels (and hidden units) are "
        "multiplied by sqrt(work), so compute and weights shrink about work-fold and "
        "activations sqrt(work)-fold; the blocks and cut points stay the model's"))


class TrainingFile(Strict):
    kind: Literal["training"]
    server: str
    devices: Literal["*"] | list[str] = "*"
    model: Literal["lenet", "vgg16", "resnet50", "resnet101"] = "lenet"
    dataset: Literal["digits", "synthetic"] = "digits"
    partition: PartitionSpec = PartitionSpec()
    batch_size: int = Field(32, ge=1, le=4096)
    batches_per_round: int = Field(10, ge=1, le=100_000)
    rounds: int = Field(20, ge=1, le=100_000)
    total_bandwidth: Rate = Field(description="B, Mbit/s shared by the devices' flows")
    lr: float = Field(0.05, gt=0, le=10)
    server_mode: Literal["split-nonpipe", "splitpipe-bf", "splitpipe-rw"] = "split-nonpipe"
    server_share: Literal["shared", "per-device"] = Field("shared", description=(
        "how split-nonpipe's per-device server processes share the server's CPU: all of it "
        "between them as the kernel schedules them (shared), or a fixed 1/M each (per-device, "
        "a host node on cgroup v1), so each device's server part runs at the speed profiled "
        "for it and eq. 4.5's round time holds per device"))
    scale: TrainingScale = TrainingScale()


@dataclass(frozen=True)
class Workload:
    """A checked training file on a topology; the unit the shared run loop schedules."""

    spec: TrainingFile
    devices: tuple[str, ...]
    source: str
    name: str = "training"
    arrival_s: float = 0.0

    @property
    def total_mbit(self) -> float:
        return float(self.spec.total_bandwidth)

    @property
    def width(self) -> float:
        """The channel multiplier every process builds the model with."""
        return self.spec.scale.work ** 0.5


def loads(text: str, source: str, topo: Topology) -> Workload:
    spec = parse_model(TrainingFile, read_yaml(text, source), source)
    names = [n.name for n in topo.nodes]
    if spec.server not in names:
        raise InputError(f"{source}: server: {spec.server!r} is not a node of {topo.name}; "
                         f"fix: use one of {', '.join(names)}")
    devices = [n for n in names if n != spec.server] if spec.devices == "*" else spec.devices
    for i, d in enumerate(devices):
        if d not in names:
            raise InputError(f"{source}: devices[{i}]: {d!r} is not a node of {topo.name}; "
                             f"fix: use one of {', '.join(names)}")
        if d == spec.server:
            raise InputError(f"{source}: devices[{i}]: {d!r} is the server; fix: leave it out")
    if not devices or len(set(devices)) != len(devices):
        raise InputError(f"{source}: devices: needs at least one node, each once")
    check_server_share(spec.server_share, spec.server_mode, source)
    server_bw = sum(lk.shape.bw_mbit or 1000.0 for lk in topo.links if spec.server in
                    (lk.a, lk.b))
    if float(spec.total_bandwidth) > server_bw:
        raise InputError(f"{source}: total_bandwidth: {float(spec.total_bandwidth):g} Mbit/s is "
                         f"more than the server's links carry ({server_bw:g} Mbit/s); fix: "
                         "lower it or widen the server's links")
    return Workload(spec, tuple(devices), source)


def check_server_share(share: str, mode: str, source: str) -> None:
    """per-device slices the server's CPU among per-device processes; SplitPipe has none."""
    if share == "per-device" and mode != "split-nonpipe":
        raise InputError(f"{source}: server_share: per-device gives each device's server "
                         f"process its own share of the CPU, and {mode} serves every device "
                         "from one pipeline; fix: use server_mode: split-nonpipe, or "
                         "server_share: shared")


def digits_partition(w: Workload) -> tuple[list[dict], dict]:
    """Each device's samples (non-IID: `classes_per_device` classes each, drawn with the
    partition seed) and the held-out test set, from scikit-learn's bundled digits."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(w.spec.partition.seed)
    order = rng.permutation(len(y))
    n_test = int(len(y) * TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    k = w.spec.partition.classes_per_device
    classes = [rng.choice(10, size=k, replace=False) for _ in w.devices]
    holders = {c: [i for i, cs in enumerate(classes) if c in cs] for c in range(10)}
    parts: list[list[int]] = [[] for _ in w.devices]
    for c in range(10):  # each class's samples split evenly among the devices that hold it
        idx = [i for i in train if y[i] == c]
        for j, i in enumerate(idx):
            if holders[c]:
                parts[holders[c][j % len(holders[c])]].append(int(i))
    out = [{"x": x[p].astype(int).tolist(), "y": y[p].astype(int).tolist()} for p in parts]
    return out, {"x": x[test].astype(int).tolist(), "y": y[test].astype(int).tolist()}
