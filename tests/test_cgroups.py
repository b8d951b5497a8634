"""cgroup v1 and v2: the mode is detected, limits are applied or refused (never silently
dropped), and what the kernel holds is read back.

This machine boots cgroup v1 (controllers cpu, memory, pids on the v1 side): v1 is tested on the
real hierarchy. A real cgroup2 hierarchy can be mounted here too, but its controllers are bound
to v1, so it offers none of cpu/memory: on it we test detection, membership, cleanup and the
refusal of a limit for real; the v2 limit writer is tested against a directory tree laid out
like /sys/fs/cgroup on a v2 host.
"""

import os
import subprocess
from pathlib import Path

import pytest

from testbed.errors import CapabilityError
from testbed.naming import Names
from testbed.net import cgroups
from tests.conftest import needs_root

NAMES = Names("tbt-cg")


def test_v2_writer_on_a_unified_tree(tmp_path):
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("")
    assert cgroups.mode(root) == "v2"
    assert cgroups.available(root) == {"cpu": True, "memory": True, "pids": True}
    node = root / "testbed" / "tbt-cg" / "a"
    node.mkdir(parents=True)
    (node / "memory.swap.max").write_text("max")
    cgroups.create(NAMES, "a", 0.5, 256, root=root)
    # controllers delegated from the root down to the testbed's directory
    for d in (root, root / "testbed", root / "testbed" / "tbt-cg"):
        assert (d / "cgroup.subtree_control").read_text().split() == ["+cpu", "+memory",
                                                                       "+pids"], d
    assert (node / "cpu.max").read_text() == "5000 10000"  # 10-ms periods (cpu_limits)
    assert (node / "memory.max").read_text() == str(256 * 10**6)  # MB = 10^6 bytes
    assert (node / "memory.swap.max").read_text() == "0"
    assert cgroups.limits(NAMES, "a", root) == {"cpu": 0.5, "memory_mb": 256}
    cgroups.set_limits(NAMES, "a", 1.5, None, root)
    assert cgroups.limits(NAMES, "a", root) == {"cpu": 1.5, "memory_mb": 256}
    (node / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n")
    assert cgroups.oom_kills(NAMES, "a", root) == 2
    (node / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    (node / "memory.current").write_text("1048576\n")
    assert cgroups.usage(NAMES, "a", root) == (2.5, 1048576)
    (node / "cgroup.procs").write_text("4242\n")
    assert cgroups.pids(NAMES, root) == {4242}
    assert cgroups.node_dirs(NAMES, "a", root) == [node]


def test_v1_writer_on_a_v1_tree(tmp_path):
    root = tmp_path / "cgroup"
    for c in ("cpu", "memory", "pids", "cpuacct"):
        (root / c).mkdir(parents=True)
        (root / c / "cgroup.procs").write_text("")
    mem = root / "memory" / "testbed" / "tbt-cg" / "a"
    mem.mkdir(parents=True)
    (mem / "memory.limit_in_bytes").write_text(str(2**63 - 4096))
    assert cgroups.mode(root) == "v1"
    cgroups.create(NAMES, "a", 0.25, 128, root=root)
    cpu = root / "cpu" / "testbed" / "tbt-cg" / "a"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "2500"
    assert (cpu / "cpu.cfs_period_us").read_text() == "10000"
    assert cgroups.limits(NAMES, "a", root) == {"cpu": 0.25, "memory_mb": 128}
    # under 0.1 core the period grows so that the quota stays at the kernel's 1 ms or more
    cgroups.set_limits(NAMES, "a", 0.04, None, root)
    assert (cpu / "cpu.cfs_quota_us").read_text() == "1000"
    assert (cpu / "cpu.cfs_period_us").read_text() == "25000"
    assert cgroups.limits(NAMES, "a", root)["cpu"] == 0.04


def test_a_limit_without_its_controller_is_refused(tmp_path):
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("pids\n")
    (root / "cgroup.subtree_control").write_text("")
    with pytest.raises(CapabilityError, match="node a: cannot apply its cpu limit"):
        cgroups.create(NAMES, "a", 0.5, None, root=root)
    with pytest.raises(CapabilityError, match="memory cgroup controller is not available"):
        cgroups.set_limits(NAMES, "a", None, 64, root=root)


@needs_root
def test_real_cgroup2_mount_detection_membership_cleanup_and_refusal(tmp_path):
    root = tmp_path / "cg2"
    root.mkdir()
    if subprocess.run(["mount", "-t", "cgroup2", "none", str(root)]).returncode != 0:
        pytest.skip("this kernel does not mount a cgroup2 hierarchy")
    proc = None
    try:
        assert cgroups.mode(root) == "v2"
        have = cgroups.available(root)
        cgroups.create(NAMES, "a", None, None, root=root)
        proc = subprocess.Popen(["sleep", "30"])
        cgroups.join(NAMES, "a", proc.pid, root=root)
        assert cgroups.pids(NAMES, root) == {proc.pid}
        if not have["cpu"]:  # bound to v1 here: the limit must be refused, not skipped
            with pytest.raises(CapabilityError, match="cpu cgroup controller"):
                cgroups.set_limits(NAMES, "a", 0.5, None, root=root)
        proc.kill()
        proc.wait()
        cgroups.remove(NAMES, root=root)
        assert not (root / "testbed").exists()
    finally:
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run(["umount", str(root)])


@needs_root
def test_this_host_is_detected_and_limits_read_back(bring_up):
    assert cgroups.mode() in ("v1", "hybrid", "v2")
    ledger = bring_up("cg", "nodes: {a: {cpu: 0.5, memory: 256}, b: {}}\n"
                            "links: [{between: [a, b]}]")
    from testbed import api

    st = api.status(ledger.name)
    assert st["nodes"]["a"]["applied"] == {"cpu": 0.5, "memory_mb": 256}
    assert st["nodes"]["b"]["applied"] == {"cpu": None, "memory_mb": None}
    caps = api.doctor()
    assert caps["cgroup_mode"] == cgroups.mode()
    assert os.path.exists(cgroups.procs_files(ledger.names, "a")[0])


def test_node_defaults_merge_field_by_field():
    from testbed.topology import loads

    topo = loads("defaults: {node: {cpu: 0.5, memory: 256}}\n"
                 "nodes: {a: {}, b: {memory: 128}, c: , d: {cpu: 1}}\n"
                 "links: [{between: [a, b]}, {between: [b, c]}, {between: [c, d]}]")
    got = {n.name: (n.cpu, n.memory_mb) for n in topo.nodes}
    assert got == {"a": (0.5, 256), "b": (0.5, 128), "c": (0.5, 256), "d": (1.0, 256)}


def test_paths_of_this_module_are_under_the_testbed_directory():
    for d in cgroups.node_dirs(NAMES, "a"):
        assert Path(d).is_relative_to("/sys/fs/cgroup") and "testbed/tbt-cg/a" in str(d)
