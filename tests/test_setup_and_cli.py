"""Set-up is idempotent; the Vagrantfile validates; doctor and schema answer."""

import json
import shutil
import subprocess

import pytest

from tests.conftest import ROOT, TESTBED, cli, needs_root


@needs_root
def test_setup_is_idempotent():
    res = subprocess.run(["bash", "scripts/setup.sh"], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines() == ["setup: ready"]  # installed/started nothing


def test_vagrantfile_validates():
    if shutil.which("vagrant") is None:
        pytest.fail("vagrant is missing: `make setup` installs Debian's vagrant package")
    # no hypervisor here: validate the Vagrantfile itself, not a provider installation
    res = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "HOME": "/root",
                              "VAGRANT_CHECKPOINT_DISABLE": "1"})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "validated successfully" in res.stdout
    assert "make setup" in (ROOT / "Vagrantfile").read_text()


@needs_root
def test_doctor_reports_this_hosts_capabilities():
    caps = json.loads(cli("doctor", "--json", check=True).stdout)
    assert caps["htb"] is True and caps["ovs"] is True and caps["vxlan"] is True
    assert isinstance(caps["netem"], bool) and caps["cgroups"]["cpu"] is True
    assert "netem" in cli("doctor", check=True).stdout


def test_schema_is_json_schema_of_the_topology_format():
    schema = json.loads(cli("schema", check=True).stdout)
    assert schema["additionalProperties"] is False
    assert {"name", "defaults", "nodes", "links", "generate"} <= set(schema["properties"])
    assert "LinkSpec" in schema["$defs"] and "between" in schema["$defs"]["LinkSpec"]["properties"]


def test_example_topologies_load():
    from testbed.topology import load

    for path in (ROOT / "topologies").glob("*.yaml"):
        assert load(path).nodes, path


def test_version_and_a_clear_message_when_not_root():
    res = cli("--version", check=True)
    assert res.stdout.startswith("testbed ") and len(res.stdout.split()) >= 2
    topo = str(ROOT / "topologies" / "square.yaml")
    as_nobody = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                *TESTBED, "up", topo], capture_output=True, text=True,
                               cwd=ROOT, timeout=120)
    assert as_nobody.returncode != 0
    assert "Traceback" not in as_nobody.stderr
    assert "root" in as_nobody.stderr, as_nobody.stderr


def test_durations_on_the_command_line_take_the_yaml_files_units():
    from testbed.cli import _seconds

    assert _seconds("30") == 30 and _seconds("2.5") == 2.5
    assert _seconds("30s") == 30 and _seconds("500ms") == 0.5
    res = cli("run", "workloads/split-fl-lenet.yaml", "--duration", "soon", "--name", "tbt-x")
    assert res.returncode == 2 and "plain seconds" in res.stderr, res.stderr
