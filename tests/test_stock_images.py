"""Any Docker image as a node, as Containernet users expect: images whose command is a shell
stay up, a tiny image without python3 forwards traffic and is left out of placement, cmd/env/
volumes/cap_add apply, a container whose command ends is reported with its exit code and
output, nodes resolve each other by name, and a `docker restart` is detected and repaired."""

import subprocess
from pathlib import Path

import pandas as pd
import pytest

from testbed import api, images
from testbed.errors import NetworkError
from tests.conftest import cli, needs_root

pytestmark = [needs_root, pytest.mark.emulation, pytest.mark.slow]

DEBIAN_LIKE = "tbt-debian-like:test"  # a shell as its command, like debian/ubuntu
TINY = "tbt-tiny:test"  # busybox only, CMD ["sh"], like alpine: no python3, no setpriv


@pytest.fixture(scope="module")
def stock_images(tmp_path_factory, edge_image):
    ctx = tmp_path_factory.mktemp("debian-like")
    (ctx / "Dockerfile").write_text(f'FROM {images.recipe("edge-node").base_tag}\n'
                                    'CMD ["bash"]\n')
    subprocess.run(["docker", "build", "-q", "-t", DEBIAN_LIKE, str(ctx)], check=True,
                   capture_output=True)
    root = tmp_path_factory.mktemp("tiny-root")
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev"):
        (root / d).mkdir()
    subprocess.run(["cp", "/bin/busybox", str(root / "bin" / "busybox")], check=True)
    for tool in ("sh", "ping", "cat", "printenv", "sleep", "grep", "echo", "ls"):
        (root / "bin" / tool).symlink_to("busybox")
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(["docker", "import", "-c", 'CMD ["sh"]', "-", TINY], stdin=tar.stdout,
                   check=True, capture_output=True)
    tar.wait()
    yield
    subprocess.run(["docker", "rmi", "-f", DEBIAN_LIKE, TINY], capture_output=True)


def test_a_container_whose_command_ends_is_reported_and_nothing_stays(bring_up,
                                                                       stock_images):
    with pytest.raises(NetworkError) as err:
        bring_up("exits", f"""
nodes:
  a: {{}}
  x: {{kind: docker, image: "{TINY}", cmd: "sleep 0.5; echo going away; exit 3"}}
links: [{{between: [a, x]}}]
""")
    msg = str(err.value)
    assert "exited at once with code 3" in msg and "going away" in msg and "cmd:" in msg
    assert "tbt-exits" not in api.known_testbeds()
    left = subprocess.run(["docker", "ps", "-aq", "--filter",
                           "label=org.edge-testbed.name=tbt-exits"], capture_output=True,
                          text=True).stdout
    assert left == ""


def test_stock_images_join_resolve_names_and_survive_a_restart(bring_up, stock_images,
                                                               tmp_path):
    shared = tmp_path / "data"
    shared.mkdir()
    (shared / "hello.txt").write_text("from the host\n")
    ledger = bring_up("stock", f"""
nodes:
  h1: {{}}
  deb: {{kind: docker, image: "{DEBIAN_LIKE}", env: {{COLOUR: blue}},
        volumes: ["{shared}:/data:ro"], cap_add: [NET_ADMIN]}}
  tiny: {{kind: docker, image: "{TINY}"}}
  srv: {{kind: docker}}
links: [{{between: [h1, tiny], bw: 20}}, {{between: [tiny, srv], bw: 20}},
        {{between: [h1, deb], bw: 20}}]
""")
    name = ledger.name

    def run(node: str, *argv: str) -> subprocess.CompletedProcess:
        return api.run_in_node(name, node, list(argv), timeout=30)

    st = api.status(name)
    assert all(st["nodes"][n]["container"]["status"] == "running" for n in ("deb", "tiny"))
    assert run("deb", "printenv", "COLOUR").stdout.strip() == "blue"
    assert run("deb", "cat", "/data/hello.txt").stdout == "from the host\n"
    cap_eff = next(line for line in run("deb", "cat", "/proc/1/status").stdout.splitlines()
                   if line.startswith("CapEff"))
    assert int(cap_eff.split()[1], 16) & (1 << 12)  # CAP_NET_ADMIN
    # names resolve everywhere: containers (Docker's hosts file) and host nodes (our own)
    for node, peer in (("deb", "h1"), ("h1", "deb"), ("tiny", "srv"), ("h1", "tiny")):
        res = run(node, "ping", "-c", "1", "-W", "2", peer)
        assert res.returncode == 0, (node, peer, res.stdout, res.stderr)
    assert "h1" not in Path("/etc/hosts").read_text().split()  # the host file untouched

    # a restart behind the testbed's back is seen, then repaired
    subprocess.run(["docker", "restart", "-t", "1", ledger.names.netns("deb")], check=True,
                   capture_output=True)
    box = api.status(name)["nodes"]["deb"]["container"]
    assert box["status"] == "restarted" and box["fix"] == "testbed node reconnect deb"
    assert run("deb", "ping", "-c", "1", "-W", "1", "h1").returncode != 0
    res = cli("node", "reconnect", "deb", "--name", name)
    assert res.returncode == 0 and "connected" in res.stdout, res.stderr
    assert api.status(name)["nodes"]["deb"]["container"]["status"] == "running"
    assert run("deb", "ping", "-c", "1", "-W", "2", "h1").returncode == 0


def test_a_run_leaves_out_nodes_that_cannot_run_tasks(bring_up, stock_images, tmp_path):
    ledger = bring_up("unable", f"""
nodes:
  a: {{cpu: 0.5}}
  tiny: {{kind: docker, image: "{TINY}"}}
  b: {{cpu: 0.5}}
links: [{{between: [a, tiny], bw: 20}}, {{between: [tiny, b], bw: 20}}]
""")
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text("""
jobs:
  - name: j
    source: a
    input: 20kB
    duration: 4s
    tasks:
      t1: {work: 0.05, memory: 64MB}
      t2: {work: 0.05, memory: 64MB, after: {t1: 20kB}}
""")
    out = tmp_path / "run"
    res = cli("run", str(jobs), "--name", ledger.name, "-s", "otfa", "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    (job,) = pd.read_csv(out / "jobs.csv").itertuples()
    assert job.status == "done" and "tiny" not in job.placement, job.placement
    import json

    meta = json.loads((out / "run.json").read_text())
    assert any("tiny left out of placement" in i["what"] for i in meta["incidents"])
    assert "tiny" not in meta["node_speeds_gops"]


def test_recipes_outside_the_repo_and_foreign_images_in_image_ls(bring_up, stock_images,
                                                                 tmp_path):
    mine = tmp_path / "my-recipes" / "tbt-quiet"
    mine.mkdir(parents=True)
    edge = images.recipe("edge-node")  # the same base packages: its base image is reused
    (mine / "recipe.yaml").write_text(
        f"base: {{suite: {edge.suite}, packages: [{', '.join(edge.packages)}]}}\n")
    (mine / "Dockerfile").write_text('ARG BASE\nFROM ${BASE}\nCMD ["sleep", "infinity"]\n')
    base = "tbt-quiet-base:" + edge.base_tag.rsplit(":", 1)[1]  # same packages, same key
    res = cli("image", "build", "tbt-quiet", "--recipes", str(mine.parent))
    try:
        assert res.returncode == 0, res.stderr
        # no second debootstrap: its base is edge-node's image under a tag of its own
        ids = {t: images.client().images.get(t).id for t in (edge.base_tag, base)}
        assert len(set(ids.values())) == 1, ids
        # a rebuilt recipe leaves no dangling copy of the image it replaced
        first = images.client().images.get("tbt-quiet:latest").id
        (mine / "Dockerfile").write_text('ARG BASE\nFROM ${BASE}\nLABEL v=2\n'
                                         'CMD ["sleep", "infinity"]\n')
        res = cli("image", "build", "tbt-quiet", "--recipes", str(mine.parent))
        assert res.returncode == 0, res.stderr
        assert images.client().images.get("tbt-quiet:latest").id != first
        assert first not in {i.id for i in images.client().images.list(all=True)}
        bring_up("foreign", f'nodes: {{t: {{kind: docker, image: "{TINY}"}}, a: {{}}}}\n'
                            "links: [{between: [t, a]}]")
        import json

        listed = {i["recipe"]: i for i in json.loads(
            cli("image", "ls", "--json", "--recipes", str(mine.parent)).stdout)}
        assert listed["tbt-quiet"]["state"] == "ready"
        assert listed["tbt-quiet"]["dir"] == str(mine.parent)
        assert listed[TINY]["state"] == "foreign" and listed[TINY]["used_by"] == ["tbt-foreign/t"]
        assert "tbt-quiet" not in cli("image", "ls").stdout  # not asked for: not listed
    finally:  # by tag: the base image itself is edge-node's and stays
        subprocess.run(["docker", "rmi", "tbt-quiet:latest", base], capture_output=True)
    assert images.client().images.get(edge.base_tag)
