"""The topology file's schema (pydantic, strict: unknown keys fail); `testbed schema` prints it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from testbed.naming import GENERATOR_PREFIX, IMAGE_NAME, TESTBED_NAME
from testbed.units import (
    parse_percent,
    parse_rate_mbit,
    parse_seconds,
    parse_size_bytes,
    parse_time_ms,
)

MAX_RATE_MBIT = 100_000.0  # 100 Gbit/s: beyond any link a host can shape
MAX_NODES = 65_534  # addresses in the fabric's /16
MAX_MEMORY_MB = 16_000_000  # 16 TB


def _not_bool(v: object) -> object:
    """`cpu: true` is a typo, not 1 core: booleans are never numbers here."""
    if isinstance(v, bool):
        raise ValueError(f"{v!r} is not a number; write a number such as 1 or 0.5")
    return v


Rate = Annotated[float, BeforeValidator(parse_rate_mbit),
                 Field(le=MAX_RATE_MBIT, description='Mbit/s, or "5Mbit"')]
Time = Annotated[float, BeforeValidator(parse_time_ms),
                 Field(le=86_400_000, description='ms, or "10ms"')]
Percent = Annotated[float, BeforeValidator(parse_percent), Field(description='%, or "0.5%"')]
MemoryMB = Annotated[
    int,
    BeforeValidator(lambda v: parse_size_bytes(v, plain_unit="mb") // 1_000_000),
    Field(le=MAX_MEMORY_MB, description='MB, or "2GB"'),
]
Number = Annotated[float, BeforeValidator(_not_bool)]
Seconds = Annotated[float, BeforeValidator(parse_seconds),
                    Field(le=31_536_000, description='s, or "10s"')]
Count = Annotated[int, BeforeValidator(_not_bool)]
IPv4 = Annotated[str, Field(pattern=r"^(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}"
                                    r"(?:25[0-5]|2[0-4]\d|1?\d?\d)$",
                            description="an IPv4 address such as 10.1.0.2")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class LinkParams(Strict):
    bw: Rate | None = None
    delay: Time | None = None
    jitter: Time | None = None
    loss: Percent | None = None


class LinkSpec(LinkParams):
    between: tuple[str, str]


class SshSpec(Strict):
    host: str = Field(description="the device's address on the management network")
    user: str = "root"
    port: int = Field(22, ge=1, le=65535)
    key: str | None = Field(None, description="private key file (key authentication)")
    password_env: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="name of an environment variable holding a password (never the password)")
    known_hosts: str = Field("~/.ssh/known_hosts", description="host keys checked on connect")


class NodeSpec(Strict):
    kind: Literal["host", "docker", "device"] = "host"
    cpu: Number | None = Field(None, ge=0.01, le=4096,
                               description="CPU quota in cores (0.5 = half a core; min 0.01)")
    memory: MemoryMB | None = None
    profile: str | None = Field(None, max_length=64)
    image: str | None = Field(None, pattern=IMAGE_NAME.pattern, max_length=200,
                              description="Docker image, e.g. edge-node or debian:bookworm")
    speed: Number | None = Field(None, gt=0, le=1e9, description="giga-operations per second")
    ssh: SshSpec | None = None
    # docker nodes only: what `docker run` would be told
    cmd: list[str] | str | None = Field(
        None, description="the container's command (default: the image's, kept running)")
    env: dict[str, str] = Field({}, max_length=1000, description="environment variables")
    volumes: list[str] = Field([], max_length=100,
                               description='binds "/host/path:/in/container[:ro]"')
    privileged: bool = False
    cap_add: list[str] = Field([], max_length=64, description="capabilities, e.g. NET_ADMIN")
    host: str | None = Field(None, max_length=64,
                             description="which of `hosts:` runs this node (topologies split "
                                         "over several hosts)")


Prefix = Annotated[str, Field(pattern=GENERATOR_PREFIX.pattern,
                              description="generated nodes are <prefix>1, <prefix>2, ...")]


class RandomMesh(Strict):
    nodes: Count = Field(ge=2, le=MAX_NODES)
    degree: Number = Field(3, gt=0, le=MAX_NODES)
    bw_mean: Rate = 10.0
    bw_var: Number = Field(0.0, ge=0, le=1e9)
    seed: Count = 0
    prefix: Prefix = "n"
    profiles: list[str] = Field([], max_length=100,
                                description="profiles drawn at random (seeded) per node")


class Star(Strict):
    nodes: Count = Field(ge=2, le=MAX_NODES)
    bw: Rate = 10.0
    prefix: Prefix = "n"


class Tree(Strict):
    depth: Count = Field(ge=1, le=16)
    fanout: Count = Field(ge=1, le=MAX_NODES)
    bw: Rate = 10.0
    prefix: Prefix = "n"


class Generate(Strict):
    random_mesh: RandomMesh | None = None
    star: Star | None = None
    tree: Tree | None = None


class Defaults(Strict):
    link: LinkParams = LinkParams()
    node: NodeSpec = NodeSpec()


class FabricSpec(Strict):
    switches_per_daemon: int | None = Field(
        None, ge=0, le=MAX_NODES,
        description="switches per ovs-vswitchd on the userspace datapath (default 4; 0: one "
                    "daemon for all, the host's own)")


class HostSpec(Strict):
    address: IPv4 = Field(description="the host's address on the network between the hosts: "
                                      "the cut links' VXLAN tunnels run between these")
    netns: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="the host is a network namespace on this machine (to try a split "
                    "topology on one machine): the namespace that holds `address`")


class TopologyFile(Strict):
    name: str | None = Field(None, pattern=TESTBED_NAME.pattern)
    defaults: Defaults = Defaults()
    nodes: dict[str, NodeSpec | None] = {}
    links: list[LinkSpec] = []
    generate: Generate | None = None
    timeline: dict | None = Field(None, description="changes during runs (see the README)")
    fabric: FabricSpec = FabricSpec()
    hosts: dict[str, HostSpec] = Field({}, max_length=1000,
                                       description="the hosts a topology is split over")
    partition: Literal["auto"] | None = Field(
        None, description="auto: place nodes without `host:` on hosts, cutting links of "
                          "little bandwidth and balancing node CPU")
