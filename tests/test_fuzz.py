"""Hostile input: random and mutated topology, job and campaign files. Every case must end in a
value or a clear input error naming the file (exit 2 at the CLI), never a traceback, never a
hang, never anything built."""

import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testbed.campaign.sweep import load_campaign
from testbed.errors import InputError
from testbed.schedulers.jobs import loads_jobs
from testbed.topology.loader import loads
from tests.conftest import cli, cli_batch, needs_root, snapshot

TOPOLOGY = """\
name: fuzz
defaults: {link: {bw: 10}, node: {cpu: 0.5}}
nodes:
  a: {cpu: 0.5, memory: 256MB}
  b: {profile: jetson-nano}
  c: {kind: docker, image: edge-node}
links:
  - {between: [a, b], bw: 2}
  - {between: [b, c], bw: "5Mbit", delay: 0}
generate: {star: {nodes: 3, prefix: s, bw: 4}}
"""
JOBS = """\
jobs:
  - name: cam
    source: a
    input: 50kB
    arrival: 0s
    duration: 10s
    tasks:
      detect: {work: 1.5, memory: 256MB}
      reid: {work: 2, memory: 128MB, after: {detect: 20kB}}
repeat: 2
arrivals: {poisson_rate: 0.5, seed: 1}
scale: {data: 0.5, work: 0.5}
"""
CAMPAIGN = """\
name: fz
topology: {generate: {random_mesh: {nodes: 5, degree: 2, bw_mean: 2}}}
jobs: jobs.yaml
mode: simulated
grid: {scheduler: [otfa, tp], topology.generate.random_mesh.bw_mean: [1, 2]}
repetitions: 2
duration: 20s
"""

KEYS = ["name", "nodes", "links", "defaults", "generate", "random_mesh", "star", "tree",
        "between", "bw", "delay", "loss", "jitter", "cpu", "memory", "profile", "kind",
        "image", "prefix", "degree", "seed", "jobs", "tasks", "source", "input", "work",
        "after", "repeat", "arrivals", "poisson_rate", "grid", "repetitions", "topology",
        "mode", "duration", "scheduler", "a", "b", "node", "scale"]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["5Mbit", "10ms", "1GB", "-3", "nan", "[/x]", "../../x", "UPPER", "a;b",
                     "", "*", "e1", "a", "b", "host", "docker", "otfa", "1e308", "0.001"]),
    st.text(string.printable, max_size=12))
TREES = st.recursive(SCALARS, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.sampled_from(KEYS), kids, max_size=5)),
    max_leaves=25)


def _mutations(base: str):
    """Byte-level edits of a valid file: deletions, insertions, replacements."""
    data = base.encode()
    pos = st.integers(0, len(data))
    junk = st.binary(min_size=1, max_size=6) | st.sampled_from(
        [b"\x00", b"\xff\xfe", b": [", b"{", b"&a [*a,*a]", b"\t", b"- ", b"!!python/object"])
    edit = st.tuples(st.sampled_from(["del", "ins", "rep"]), pos, pos, junk)

    def apply(edits) -> bytes:
        out = bytearray(data)
        for op, i, j, b in edits:
            i, j = sorted((min(i, len(out)), min(j, len(out))))
            if op == "del":
                del out[i:j]
            elif op == "ins":
                out[i:i] = b
            else:
                out[i:j] = b
        return bytes(out)

    return st.lists(edit, min_size=1, max_size=4).map(apply)


def _clear(e: InputError, source: str) -> None:
    text = str(e)
    assert text.startswith(f"{source}: "), text
    assert "Traceback" not in text


def _decode(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


FUZZ = settings(max_examples=220, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(st.one_of(_mutations(TOPOLOGY), TREES.map(lambda t: yaml.safe_dump(t).encode())))
def test_topology_loader_on_hostile_files(tmp_path_factory, raw):
    path = Path(tmp_path_factory.mktemp("t")) / "topo.yaml"
    path.write_bytes(raw)
    from testbed.topology import load

    try:
        load(path)
    except InputError as e:
        _clear(e, str(path))


@FUZZ
@given(st.one_of(_mutations(JOBS), TREES.map(lambda t: yaml.safe_dump(t).encode())))
def test_job_loader_on_hostile_files(raw):
    text = _decode(raw)
    if text is None:
        return
    topo = loads("nodes: {a: {}, b: {}}\nlinks: [{between: [a, b]}]")
    try:
        loads_jobs(text, "jobs.yaml", topo)
    except InputError as e:
        _clear(e, "jobs.yaml")


@FUZZ
@given(st.one_of(_mutations(CAMPAIGN), TREES.map(lambda t: yaml.safe_dump(t).encode())))
def test_campaign_loader_on_hostile_files(tmp_path_factory, raw):
    d = Path(tmp_path_factory.mktemp("c"))
    (d / "jobs.yaml").write_text(JOBS.replace("source: a", 'source: "*"'))
    path = d / "campaign.yaml"
    path.write_bytes(raw)
    try:
        load_campaign(path)
    except InputError as e:
        assert str(path) in str(e) or str(d / "jobs.yaml") in str(e), str(e)


BOUNDED = {
    "alias_bomb": "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)) + "nodes: *i\n",
    "huge_mesh": "generate: {random_mesh: {nodes: 2147483647}}",
    "big_mesh": "generate: {random_mesh: {nodes: 100000}}",
    "beyond_this_host": "generate: {random_mesh: {nodes: 60000}}",
    "deep": "nodes: " + "[" * 900 + "]" * 900,
    "nan_bw": "nodes: {a: {}, b: {}}\nlinks: [{between: [a, b], bw: .nan}]",
    "inf_bw": "nodes: {a: {}, b: {}}\nlinks: [{between: [a, b], bw: .inf}]",
    "e308_bw": "nodes: {a: {}, b: {}}\nlinks: [{between: [a, b], bw: 1e308}]",
    "tiny_cpu": "nodes: {a: {cpu: 0.001}, b: {}}\nlinks: [{between: [a, b]}]",
    "bool_cpu": "nodes: {a: {cpu: true}, b: {}}\nlinks: [{between: [a, b]}]",
    "huge_memory": "nodes: {a: {memory: 1180591620717411303424}, b: {}}\n"
                   "links: [{between: [a, b]}]",
    "negative_memory": "nodes: {a: {memory: -5}, b: {}}\nlinks: [{between: [a, b]}]",
    "duplicate_key": "nodes: {a: {}, b: {}}\nnodes: {c: {}}\nlinks: []",
    "markup": "nodes: {a: {profile: '[/x]'}, b: {}}\nlinks: [{between: [a, b]}]",
    "bad_prefix": "generate: {star: {nodes: 3, prefix: 'a b'}}",
    "empty_image": "nodes: {a: {kind: docker, image: ''}, b: {}}\nlinks: [{between: [a, b]}]",
}
BINARY = {"utf16": "nodes: {}".encode("utf-16"), "nul": b"nodes: {a: {}}\x00",
          "latin1": "name: caf\xe9".encode("latin-1")}


@needs_root
@pytest.mark.emulation
def test_listed_hostile_topologies_are_exit_2_and_build_nothing(tmp_path):
    before = snapshot()
    cases = {**{k: v.encode() for k, v in BOUNDED.items()}, **BINARY}
    paths = {}
    for case, raw in cases.items():
        paths[case] = tmp_path / f"{case}.yaml"
        paths[case].write_bytes(raw)
    results = cli_batch(*(["up", str(p), "--name", "tbt-fuzz"] for p in paths.values()),
                        *(["up", special, "--name", "tbt-fuzz"]
                          for special in ("/dev/zero", str(tmp_path))))
    for (case, path), res in zip(paths.items(), results, strict=False):
        msg = " ".join(res.stderr.split())
        assert res.returncode == 2, (case, res.stderr[-2000:])
        assert msg.startswith(f"error: {path}"), (case, msg)
        assert "Traceback" not in res.stderr, case
    for res in results[len(paths):]:
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert snapshot() == before


def test_listed_hostile_job_and_campaign_files_are_clear_errors(tmp_path):
    topo = tmp_path / "t.yaml"
    topo.write_text("nodes: {a: {}, b: {}}\nlinks: [{between: [a, b]}]")
    jobs_cases = {
        "repeat": JOBS.replace("repeat: 2", "repeat: 10000000"),
        "neg_input": JOBS.replace("input: 50kB", "input: -5"),
        "neg_after": JOBS.replace("detect: 20kB", "detect: -20"),
        "nan_duration": JOBS.replace("duration: 10s", "duration: .nan"),
        "neg_arrival": JOBS.replace("arrival: 0s", "arrival: -3"),
    }
    for case, text in jobs_cases.items():
        (tmp_path / f"{case}.yaml").write_text(text)
    results = cli_batch(*(["schedule", str(topo), str(tmp_path / f"{case}.yaml"), "-s", "otfa"]
                          for case in jobs_cases))
    for case, res in zip(jobs_cases, results, strict=True):
        path = tmp_path / f"{case}.yaml"
        assert res.returncode == 2 and f"error: {path}" in res.stderr, (case, res.stderr)
    (tmp_path / "jobs.yaml").write_text(JOBS)
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    camp_cases = {
        "repetitions": CAMPAIGN.replace("repetitions: 2", "repetitions: 1000000000"),
        "grid_1e10": CAMPAIGN.replace("grid: {", "grid: {jobs.repeat: [" + ", ".join(
            ["1"] * 100000) + "], topology.seed: [" + ", ".join(["1"] * 100000) + "], "),
        "jobs_is_a_list": CAMPAIGN.replace("jobs: jobs.yaml", "jobs: list.yaml"),
        "jobs_is_a_dir": CAMPAIGN.replace("jobs: jobs.yaml", f"jobs: {tmp_path}"),
        "jobs_is_binary": CAMPAIGN.replace("jobs: jobs.yaml", "jobs: /dev/zero"),
    }
    for case, text in camp_cases.items():
        (tmp_path / f"{case}.yaml").write_text(text)
    results = cli_batch(*(["campaign", str(tmp_path / f"{case}.yaml"), "--dry-run"]
                          for case in camp_cases))
    for case, res in zip(camp_cases, results, strict=True):
        assert res.returncode == 2 and "Traceback" not in res.stderr, (case, res.stderr[-800:])
        assert "error: " in res.stderr, case


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(_mutations(TOPOLOGY), _mutations(JOBS))
def test_cli_on_mutated_files_exits_0_or_2(tmp_path_factory, topo_raw, jobs_raw):
    d = Path(tmp_path_factory.mktemp("cli"))
    (d / "t.yaml").write_bytes(topo_raw)
    (d / "j.yaml").write_bytes(jobs_raw)
    res = cli("schedule", str(d / "t.yaml"), str(d / "j.yaml"), "-s", "otfa", timeout=60)
    assert res.returncode in (0, 2), res.stderr[-1500:]
    assert "Traceback" not in res.stderr
