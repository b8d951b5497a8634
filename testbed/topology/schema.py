"""The topology file's schema (pydantic, strict: unknown keys fail); `testbed schema` prints it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from testbed.units import parse_percent, parse_rate_mbit, parse_size_bytes, parse_time_ms

Rate = Annotated[float, BeforeValidator(parse_rate_mbit), Field(description='Mbit/s, or "5Mbit"')]
Time = Annotated[float, BeforeValidator(parse_time_ms), Field(description='ms, or "10ms"')]
Percent = Annotated[float, BeforeValidator(parse_percent), Field(description='%, or "0.5%"')]
MemoryMB = Annotated[
    int,
    BeforeValidator(lambda v: parse_size_bytes(v, plain_unit="mb") // 1_000_000),
    Field(description='MB, or "2GB"'),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    cpu: float | None = Field(None, gt=0, description="CPU quota in cores (0.5 = half a core)")
    memory: MemoryMB | None = None
    profile: str | None = None
    image: str | None = None
    speed: float | None = Field(None, gt=0, description="giga-operations per second")
    ssh: SshSpec | None = None


class RandomMesh(Strict):
    nodes: int = Field(ge=2)
    degree: float = Field(3, gt=0)
    bw_mean: Rate = 10.0
    bw_var: float = Field(0.0, ge=0)
    seed: int = 0
    prefix: str = "n"
    profiles: list[str] = Field([], description="profiles drawn at random (seeded) per node")


class Star(Strict):
    nodes: int = Field(ge=2)
    bw: Rate = 10.0
    prefix: str = "n"


class Tree(Strict):
    depth: int = Field(ge=1)
    fanout: int = Field(ge=1)
    bw: Rate = 10.0
    prefix: str = "n"


class Generate(Strict):
    random_mesh: RandomMesh | None = None
    star: Star | None = None
    tree: Tree | None = None


class Defaults(Strict):
    link: LinkParams = LinkParams()
    node: NodeSpec = NodeSpec()


class TopologyFile(Strict):
    name: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9-]{0,30}$")
    defaults: Defaults = Defaults()
    nodes: dict[str, NodeSpec | None] = {}
    links: list[LinkSpec] = []
    generate: Generate | None = None
