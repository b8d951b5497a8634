"""The speed hold: node quotas scaled by how much slower or faster the machine computes than
in the priced window, on this machine's real cgroup v1 hierarchy (a node and a slice inside
it, whose quota the kernel forbids to exceed its parent's)."""

import pytest

from testbed.experiment import speedhold
from testbed.naming import Names
from testbed.net import cgroups
from tests.conftest import needs_root

NAMES = Names("tbt-hold")


def test_the_scale_is_the_reference_over_the_running_median_within_bounds():
    assert speedhold.scale(100.0, [100.0]) == 1.0
    # a machine 20% slower for torch: a node needs 1.25x the CPU-seconds for the same work
    assert speedhold.scale(100.0, [80.0] * 5) == pytest.approx(1.25)
    # one slow sample among the last eight does not move the median much
    assert speedhold.scale(100.0, [100.0] * 7 + [50.0]) == pytest.approx(1.0)
    # only the last WINDOW samples count
    assert speedhold.scale(100.0, [50.0] * 20 + [100.0] * speedhold.WINDOW) == 1.0
    # beyond the bounds the machine is another one: hold what can be held
    assert speedhold.scale(100.0, [10.0]) == speedhold.BOUNDS[1]
    assert speedhold.scale(100.0, [1000.0]) == speedhold.BOUNDS[0]


@needs_root
def test_a_node_and_its_slice_follow_the_machine_and_get_their_quotas_back():
    cgroups.create(NAMES, "n", 0.5, None)
    top = cgroups.node_dirs(NAMES, "n")[0]
    try:
        slices = cgroups.cpu_slices(NAMES, "n", {"a": 0.5})  # as much as its node: tightest
        sl = top / "slice.a"
        assert sl.exists() and set(slices) == {"a"}
        hold = speedhold.SpeedHold({"n": (top, 0.5), "n/slice.a": (sl, 0.5)}, 100.0,
                                   recent=[100.0] * 3)
        # noise inside the dead band is not written
        assert hold.update(99.0) == 1.0 and hold.changes == 0
        # the machine slows down: the parent is raised before the child (else EINVAL)
        for _ in range(speedhold.WINDOW):
            hold.update(80.0)
        assert hold.current == pytest.approx(1.25)
        assert cgroups.get_cpu(top) == pytest.approx(0.625) == cgroups.get_cpu(sl)
        # and speeds up past the start: the child is lowered before the parent
        for _ in range(speedhold.WINDOW):
            hold.update(125.0)
        assert hold.current == pytest.approx(0.8)
        assert cgroups.get_cpu(top) == pytest.approx(0.4) == cgroups.get_cpu(sl)
        # a sample the probe could not take changes nothing
        assert hold.update(None) == pytest.approx(0.8)
        hold.release()
        assert cgroups.get_cpu(top) == 0.5 == cgroups.get_cpu(sl)
        assert hold.summary()["held"] == ["n", "n/slice.a"]
    finally:
        cgroups.remove_cpu_slices(NAMES, "n")
        cgroups.remove(NAMES)
