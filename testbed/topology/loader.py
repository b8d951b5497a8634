"""Load a topology file: YAML -> strict schema -> whole-model checks -> immutable Topology.

Every problem becomes a TopologyError naming the file, the field and the fix; nothing is built
from a file that fails here.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import stat
import types
import typing
from pathlib import Path

import networkx as nx
import pydantic
import yaml

from testbed.errors import TopologyError
from testbed.naming import (
    GENERATOR_PREFIX_RULE,
    IMAGE_NAME_RULE,
    NODE_NAME,
    NODE_NAME_RULE,
    TESTBED_NAME_RULE,
)
from testbed.topology import generate, partition
from testbed.topology.model import SUBNET, Host, Link, LinkShape, Node, Topology
from testbed.topology.profiles import PROFILES
from testbed.topology.schema import LinkParams, NodeSpec, TopologyFile

M = typing.TypeVar("M", bound=pydantic.BaseModel)
MAX_FILE_BYTES = 4_000_000  # a topology, job or campaign file; generators make big ones
MAX_VALUES = 200_000  # scalars and containers after YAML aliases are expanded
MAX_DEPTH = 64


def read_file(path: Path) -> str:
    """A user's file as text, or an error that says why it cannot be read: only regular files
    of bounded size (never /dev/zero or a FIFO), UTF-8 text without NUL bytes."""
    where = str(path)
    try:
        st = path.stat()
    except OSError as e:
        raise TopologyError(where, "", f"cannot read the file ({e.strerror})",
                            "check the path") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise TopologyError(where, "", f"is {kind}", "give the path of a YAML file")
    if st.st_size > MAX_FILE_BYTES:
        raise TopologyError(where, "", f"is {st.st_size:,} bytes, more than the "
                            f"{MAX_FILE_BYTES:,} a description may have",
                            "use a generator (`generate:`) for large topologies")
    try:
        data = path.read_bytes()[:MAX_FILE_BYTES + 1]
    except OSError as e:
        raise TopologyError(where, "", f"cannot read the file ({e.strerror})",
                            "check the path and its permissions") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TopologyError(where, f"byte {e.start}", "is not UTF-8 text",
                            "save the file as UTF-8") from None
    if "\x00" in text:
        raise TopologyError(where, f"byte {text.index(chr(0))}", "contains a NUL byte",
                            "save the file as plain UTF-8 text") from None
    return text


class _Loader(yaml.SafeLoader):
    """Safe YAML that refuses duplicate keys (silently keeping the last is a trap)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[str, object] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key_node.value!r}", key_node.start_mark)
            seen[key_node.value] = True
        return super().construct_mapping(node, deep=deep)


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_yaml_map)


def _check_size(data: object, source: str) -> None:
    """Refuse data that aliases blow up, or nesting deeper than any real file needs (walked
    without recursion, stopping at the first limit)."""
    stack = [(data, 0)]
    count = 0
    while stack:
        item, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise TopologyError(source, "", f"expands to more than {MAX_VALUES:,} values "
                                "(YAML aliases?)", "write the file without alias bombs")
        if depth > MAX_DEPTH:
            raise TopologyError(source, "", f"is nested more than {MAX_DEPTH} levels deep",
                                "flatten the structure")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
            stack.extend((k, depth + 1) for k in item)
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def load(path: str | Path) -> Topology:
    """Read, validate and build the Topology of a YAML file."""
    path = Path(path)
    return loads(read_file(path), source=str(path), default_name=path.stem)


def read_yaml(text: str, source: str) -> object:
    """Parse YAML, turning syntax errors into errors with a line number."""
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        line = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise TopologyError(source, line, f"YAML syntax error: {e.problem}",
                            "fix the indentation or quoting there") from None
    except yaml.YAMLError as e:
        raise TopologyError(source, "", f"not readable as YAML ({e})",
                            "save it as plain UTF-8 YAML") from None
    except RecursionError:
        raise TopologyError(source, "", "is nested too deeply to read",
                            "flatten the structure") from None
    _check_size(data, source)
    return data


def parse_model(model: type[M], raw: object, source: str) -> M:
    """Validate raw data against a strict schema; the first error becomes a TopologyError."""
    try:
        return model.model_validate(raw if raw is not None else {})
    except pydantic.ValidationError as e:
        raise _to_topology_error(model, e, source) from None


def loads(text: str, source: str = "<string>", default_name: str = "testbed") -> Topology:
    spec = parse_model(TopologyFile, read_yaml(text, source), source)
    topo = build(spec, source, default_name)
    if spec.timeline is not None:  # checked now; played by runs (testbed/experiment/timeline.py)
        from testbed.topology.timeline import expand, parse

        expand(parse(spec.timeline, source), topo, source, Path(source).parent, 3600.0)
    return topo


def build(spec: TopologyFile, source: str, default_name: str = "testbed") -> Topology:
    """Turn a validated file into a Topology, checking the model as a whole."""
    name = spec.name or _safe_name(default_name)
    node_specs: dict[str, NodeSpec] = {}
    for node_name, ns in spec.nodes.items():
        if not NODE_NAME.match(str(node_name)):
            raise TopologyError(source, f"nodes.{str(node_name)[:40]}",
                                "is not a valid node name", NODE_NAME_RULE)
        node_specs[str(node_name)] = _with_defaults(ns, spec.defaults.node)
    raw_links: list[tuple[str, str, LinkParams, str]] = []
    for i, ls in enumerate(spec.links):
        raw_links.append((ls.between[0], ls.between[1], ls, f"links[{i}]"))
    if spec.generate:
        _add_generated(spec, node_specs, raw_links, source)
    if not node_specs:
        raise TopologyError(source, "nodes", "the topology has no nodes",
                            "list nodes under `nodes:` or add a `generate:` section")
    if len(node_specs) > SUBNET.num_addresses - 2:
        raise TopologyError(source, "nodes", f"{len(node_specs)} nodes do not fit in {SUBNET}",
                            "use fewer nodes")
    nodes = tuple(_node(n, i, ns, source) for i, (n, ns) in enumerate(node_specs.items()))
    links = _links(raw_links, spec.defaults.link, set(node_specs), source)
    topo = Topology(name=name, nodes=nodes, links=links, source=source,
                    switches_per_daemon=spec.fabric.switches_per_daemon)
    _check_connected(topo, source)
    if spec.hosts or spec.partition or any(n.host for n in node_specs.values()):
        topo = _on_hosts(topo, spec, node_specs, source)
    return topo


def _on_hosts(topo: Topology, spec: TopologyFile, node_specs: dict[str, NodeSpec],
              source: str) -> Topology:
    """The topology with every node on one of `hosts:` (pinned by `host:` or placed by
    `partition: auto`)."""
    if not spec.hosts:
        where = "partition" if spec.partition else \
            f"nodes.{next(n for n, s in node_specs.items() if s.host)}.host"
        raise TopologyError(source, where, "names hosts, but the file has no `hosts:`",
                            "add hosts: {a: {address: ...}, b: {address: ...}}")
    for h in spec.hosts:
        if not NODE_NAME.match(str(h)):
            raise TopologyError(source, f"hosts.{str(h)[:40]}", "is not a valid host name",
                                NODE_NAME_RULE)
    addresses = [h.address for h in spec.hosts.values()]
    if len(set(addresses)) < len(addresses):
        dup = next(a for a in addresses if addresses.count(a) > 1)
        raise TopologyError(source, "hosts", f"two hosts have the address {dup}",
                            "give every host its own address")
    pinned = {}
    for n, ns in node_specs.items():
        if ns.host is None:
            if not spec.partition:
                raise TopologyError(source, f"nodes.{n}.host", "is missing: the topology is "
                                    "split over hosts", "give every node a host: or set "
                                    "`partition: auto`")
            continue
        if ns.host not in spec.hosts:
            raise TopologyError(source, f"nodes.{n}.host", f"unknown host {ns.host!r}",
                                _did_you_mean(ns.host, spec.hosts) or
                                f"use one of {', '.join(spec.hosts)}")
        pinned[n] = ns.host
    # a board computes on itself: it weighs nothing in a host's share of the CPU, and joins
    # the host its links pull it to (its tunnel end and switch live there)
    place = partition.split({n.name: 0.0 if n.kind == "device" else partition.node_cpu(n.cpu)
                             for n in topo.nodes},
                            [(lk.a, lk.b, lk.shape.bw_mbit) for lk in topo.links],
                            list(spec.hosts), pinned)
    hosts = tuple(Host(name=h, address=v.address, netns=v.netns) for h, v in spec.hosts.items())
    return dataclasses.replace(topo, hosts=hosts, nodes=tuple(
        dataclasses.replace(n, host=place[n.name]) for n in topo.nodes))


def _with_defaults(ns: NodeSpec | None, default: NodeSpec) -> NodeSpec:
    """A node's own fields over `defaults.node`, field by field (as for links)."""
    if ns is None:
        return default
    given = {k: getattr(ns, k) for k in ns.model_fields_set}
    return default.model_copy(update=given) if given else default


def _safe_name(stem: str) -> str:
    name = re.sub(r"[^a-z0-9-]", "-", stem.lower()).strip("-")[:31]
    return name or "testbed"


def _add_generated(spec, node_specs, raw_links, source) -> None:
    gen = spec.generate
    chosen = [k for k in ("random_mesh", "star", "tree") if getattr(gen, k) is not None]
    if len(chosen) != 1:
        raise TopologyError(source, "generate", "needs exactly one generator",
                            "use one of random_mesh, star, tree")
    kind = chosen[0]
    g = getattr(gen, kind)
    if kind == "random_mesh":
        n, d = g.nodes, g.degree
        need = 2 * (n - 1) / n
        if d < need or generate.mesh_edge_count(g) < n - 1:
            raise TopologyError(source, "generate.random_mesh.degree",
                                f"degree {d} cannot connect {n} nodes",
                                f"use a degree of at least {need:.2f}")
        if d > n - 1:
            raise TopologyError(source, "generate.random_mesh.degree",
                                f"degree {d} is impossible with {n} nodes",
                                f"use a degree of at most {n - 1}")
        if g.bw_mean <= 0:
            raise TopologyError(source, "generate.random_mesh.bw_mean", "must be positive",
                                "write e.g. 1 or \"1Mbit\"")
    if kind == "tree":
        total = sum(g.fanout ** d for d in range(g.depth + 1))
        if total > SUBNET.num_addresses - 2:
            raise TopologyError(source, "generate.tree", f"{total:,} nodes do not fit in "
                                f"{SUBNET}", "use a smaller depth or fanout")
    names, edges = getattr(generate, kind)(g)
    drawn = generate.draw_profiles(g, names) if kind == "random_mesh" else {}
    for i, p in enumerate(drawn.values()):
        if p not in PROFILES:
            raise TopologyError(source, f"generate.random_mesh.profiles[{i}]",
                                f"unknown profile {p!r}", _did_you_mean(p, PROFILES) or
                                f"use one of {', '.join(PROFILES)}")
    for n in names:
        if n in node_specs:
            raise TopologyError(source, f"generate.{kind}",
                                f"generated node {n!r} clashes with a listed node",
                                "rename the listed node or set `prefix:` in the generator")
        node_specs[n] = (spec.defaults.node.model_copy(update={"profile": drawn[n]})
                         if n in drawn else spec.defaults.node)
    for a, b, bw in edges:
        raw_links.append((a, b, LinkParams(bw=bw), f"generate.{kind}"))


DEFAULT_IMAGE = "edge-node"


def _node(name: str, index: int, ns: NodeSpec, source: str) -> Node:
    cpu, memory = ns.cpu, ns.memory
    if ns.profile is not None:
        prof = PROFILES.get(ns.profile)
        if prof is None:
            raise TopologyError(source, f"nodes.{name}.profile", f"unknown profile {ns.profile!r}",
                                _did_you_mean(ns.profile, PROFILES) or
                                f"use one of {', '.join(PROFILES)}")
        cpu = cpu if cpu is not None else prof.cpu_cores()
        memory = memory if memory is not None else prof.memory_mb
    if memory is not None and memory < 64:
        raise TopologyError(source, f"nodes.{name}.memory", f"{memory} MB is too little",
                            "give at least 64 MB")
    cores = os.cpu_count() or 1
    if cpu is not None and cpu > cores and ns.kind != "device":
        raise TopologyError(source, f"nodes.{name}.cpu", f"{cpu:g} cores is more than this "
                            f"host has ({cores})", f"give at most {cores}")
    ssh = ns.ssh.model_dump() if ns.ssh else None
    if ns.kind == "device" and ssh is None:
        raise TopologyError(source, f"nodes.{name}.ssh", "a device node needs ssh settings",
                            "add ssh: {host: ..., user: ..., key: ...}")
    if ssh is not None and ns.kind != "device":
        raise TopologyError(source, f"nodes.{name}.ssh", f"ssh is for kind: device, not "
                            f"{ns.kind}", "remove ssh or set kind: device")
    image = ns.image
    if ns.kind == "docker":
        image = image or DEFAULT_IMAGE
    elif image is not None:
        raise TopologyError(source, f"nodes.{name}.image", f"image is for kind: docker, not "
                            f"{ns.kind}", "remove image or set kind: docker")
    return Node(name=name, index=index, kind=ns.kind, cpu=cpu, memory_mb=memory,
                profile=ns.profile, image=image, speed=ns.speed, ssh=ssh,
                container=_container(name, ns, source))


CAPABILITY = re.compile(r"^(CAP_)?[A-Z_]{2,32}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def _container(name: str, ns: NodeSpec, source: str) -> dict | None:
    """A docker node's run settings, checked: binds of existing absolute host paths to
    absolute container paths, environment names, capability names."""
    given = {k: getattr(ns, k) for k in ("cmd", "env", "volumes", "privileged", "cap_add")
             if getattr(ns, k)}
    if not given:
        return None
    if ns.kind != "docker":
        key = next(iter(given))
        raise TopologyError(source, f"nodes.{name}.{key}", f"{key} is for kind: docker, not "
                            f"{ns.kind}", f"remove {key} or set kind: docker")
    for i, bind in enumerate(ns.volumes):
        parts = bind.split(":")
        where = f"nodes.{name}.volumes[{i}]"
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise TopologyError(source, where, f"{bind!r} is not a bind",
                                'write "/host/path:/path/in/container" or add ":ro"')
        host, inside = parts[0], parts[1]
        if not (host.startswith("/") and inside.startswith("/")):
            raise TopologyError(source, where, f"{bind!r}: both paths must be absolute",
                                'write "/host/path:/path/in/container"')
        if not os.path.exists(host):
            raise TopologyError(source, where, f"host path {host} does not exist",
                                "create it first or fix the path")
    for key in ns.env:
        if not ENV_NAME.match(key):
            raise TopologyError(source, f"nodes.{name}.env.{key}", "is not a variable name",
                                "use letters, digits and _ (not first a digit)")
    for i, cap in enumerate(ns.cap_add):
        if not CAPABILITY.match(cap):
            raise TopologyError(source, f"nodes.{name}.cap_add[{i}]", f"{cap!r} is not a "
                                "capability name", "write e.g. NET_ADMIN or SYS_PTRACE")
    if isinstance(given.get("cmd"), str):
        given["cmd"] = ["/bin/sh", "-c", given["cmd"]]
    return given


def _links(raw, defaults: LinkParams, names: set[str], source: str) -> tuple[Link, ...]:
    seen: dict[frozenset, str] = {}
    links = []
    for a, b, params, field in raw:
        for end in (a, b):
            if end not in names:
                raise TopologyError(source, f"{field}.between", f"unknown node {end!r}",
                                    _did_you_mean(end, names) or "add it under `nodes:`")
        if a == b:
            raise TopologyError(source, f"{field}.between", f"links {a!r} to itself",
                                "a link joins two different nodes")
        key = frozenset((a, b))
        if key in seen:
            raise TopologyError(source, f"{field}.between",
                                f"duplicate link {a}-{b} (already {seen[key]})",
                                "keep one link per node pair")
        seen[key] = field

        def pick(attr: str, p: LinkParams = params) -> float | None:
            v = getattr(p, attr)
            return v if v is not None else getattr(defaults, attr)

        bw, delay, jitter, loss = pick("bw"), pick("delay"), pick("jitter"), pick("loss")
        if bw is not None and bw <= 0:
            raise TopologyError(source, f"{field}.bw", f"rate {bw:g} Mbit/s must be positive",
                                "write e.g. 5 or \"5Mbit\", or leave it out for an unshaped link")
        if bw is not None and bw < 0.01:
            raise TopologyError(source, f"{field}.bw", f"{bw * 1000:g} kbit/s is too slow to shape",
                                "use at least 10kbit")
        for attr, v in (("delay", delay), ("jitter", jitter)):
            if v is not None and v < 0:
                raise TopologyError(source, f"{field}.{attr}", "must not be negative",
                                    f"write e.g. {attr}: \"10ms\"")
        if loss is not None and not 0 <= loss <= 100:
            raise TopologyError(source, f"{field}.loss", f"{loss:g}% is not a loss rate",
                                "write a percentage from 0 to 100, e.g. \"0.5%\"")
        shape = LinkShape(bw_mbit=bw, delay_ms=delay or 0.0, jitter_ms=jitter or 0.0,
                          loss_pct=loss or 0.0)
        links.append(Link(index=len(links), a=a, b=b, shape=shape))
    return tuple(links)


def _check_connected(topo: Topology, source: str) -> None:
    parts = list(nx.connected_components(topo.graph))
    if len(parts) > 1:
        parts.sort(key=len, reverse=True)
        alone = sorted(parts[1])[:5]
        raise TopologyError(source, "links",
                            f"the network is disconnected: {', '.join(alone)} cannot reach "
                            f"{sorted(parts[0])[0]}", "add a link joining the parts")


SYNONYMS = {"bandwidth": "bw", "bandwith": "bw", "rate": "bw", "latency": "delay",
            "mem": "memory", "cpus": "cpu", "type": "kind"}


def _did_you_mean(word: str, options) -> str:
    options = [str(o) for o in options]
    if str(word).lower() in ("password", "pass", "passwd") and "password_env" in options:
        return ("passwords never go in the file: put it in an environment variable and write "
                "password_env: VARIABLE_NAME")
    if SYNONYMS.get(str(word).lower()) in options:
        return f"did you mean {SYNONYMS[str(word).lower()]!r}?"
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else ""


def _to_topology_error(model: type[pydantic.BaseModel], e: pydantic.ValidationError,
                       source: str) -> TopologyError:
    errors = e.errors(include_url=False)
    # an unknown key usually explains a "missing" one next to it (a typo): report it first
    err = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])
    # pydantic names the member of a union it tried (a model's class name): not a user key
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p in _model_names(model))]
    field = _format_loc(loc)
    if err["type"] == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        allowed = list(parent.model_fields) if parent else []
        hint = _did_you_mean(str(loc[-1]), allowed)
        fix = hint or (f"allowed here: {', '.join(allowed)}" if allowed else "remove it")
        return TopologyError(source, field, "unknown field", fix)
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    fix = ""
    if " ; " not in msg and "; " in msg:
        msg, fix = msg.split("; ", 1)
    elif err["type"] == "model_type" and not loc:
        msg, fix = "the file is not a mapping", "write keys such as `nodes:` and `links:`"
    elif err["type"].startswith(("greater_than", "less_than")):
        fix = "change the value"
    elif err["type"] == "missing":
        fix = "add it"
    elif err["type"] == "string_pattern_mismatch" and loc:
        rules = {"name": TESTBED_NAME_RULE, "prefix": GENERATOR_PREFIX_RULE,
                 "image": IMAGE_NAME_RULE}
        shown = repr(err.get("input"))[:60]
        msg, fix = f"{shown} is not a valid {loc[-1]}", rules.get(str(loc[-1]), "")
    return TopologyError(source, field, msg, fix)


def _model_names(model: type[pydantic.BaseModel]) -> set[str]:
    """Class names of every model reachable from `model`'s fields."""
    seen: set[str] = set()
    todo: list = [model]
    while todo:
        tp = todo.pop()
        if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
            if tp.__name__ in seen:
                continue
            seen.add(tp.__name__)
            todo += [f.annotation for f in tp.model_fields.values()]
        else:
            todo += list(typing.get_args(tp))
    return seen


def _format_loc(loc) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _model_at(model, loc) -> type[pydantic.BaseModel] | None:
    """The schema model that sits at a location path, to list its allowed keys."""
    current: object = model
    for p in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, pydantic.BaseModel):
            f = current.model_fields.get(str(p))
            if f is None:
                return None
            current = f.annotation
        else:  # a dict or list container: step into its value type
            args = typing.get_args(current)
            current = args[-1] if args else None
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, pydantic.BaseModel):
        return current
    return None


def _unwrap(tp):
    """Strip Optional/Annotated so the model type shows."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp
