"""The machine's speed sampled during runs (host.csv): what it reads against its own start,
and a helper that is gone."""

import math
import statistics
import time

from hypothesis import given
from hypothesis import strategies as st

from testbed.experiment.hostspeed import HostProbe, levels, summary


def test_the_probe_reads_about_one_against_its_start_and_its_helper_ends_with_it():
    probe = HostProbe()
    try:
        rows = []
        for t in range(15):
            time.sleep(0.05)  # as between a run's samples: the reference is taken the same way
            rows.append(probe.sample(t * 0.05))
    finally:
        probe.close()
    assert probe.proc.poll() is not None
    speeds = [r["speed_vs_start"] for r in rows]
    # one probe is a few milliseconds, and this VM's vCPUs switch between two speeds ~1.5x
    # apart (bench/vcpu_modes.py): a start read at the fast speed and samples at the slow one
    # read ~0.6 (CI, 2026-12-04), the other way round ~1.6; never a factor of 2
    assert 0.5 < statistics.median(speeds) < 2, speeds
    assert all(0 <= r["steal_share"] <= 1 and 0 <= r["busy_share"] <= 1 for r in rows)
    s = summary(probe, rows)
    assert s["speed_vs_start_p10"] <= s["speed_vs_start_median"] <= s["speed_vs_start_p90"]
    # the raw median, for comparing runs with each other
    assert s["spin_per_cpu_s_median"] == round(statistics.median(r["spin_per_cpu_s"]
                                                                 for r in rows))
    # without torch no convolution is timed: its cells stay empty, run.json says nothing of it
    assert all(r["conv_speed_vs_start"] is None for r in rows)
    assert "conv_speed_vs_start_median" not in s and "conv_per_cpu_s_median" not in s


def test_for_torch_steps_the_probe_also_times_a_convolution_against_its_start():
    probe = HostProbe(torch=True)
    try:
        rows = []
        for t in range(9):
            time.sleep(0.05)
            rows.append(probe.sample(t * 0.05))
    finally:
        probe.close()
    convs = [r["conv_speed_vs_start"] for r in rows]
    assert None not in convs and 0.5 < statistics.median(convs) < 2, convs  # as above
    # a 3x3 convolution of 32 channels on 64x64 takes ~1-3 ms of one core here
    assert all(200 < r["conv_per_cpu_s"] < 2000 for r in rows), rows
    s = summary(probe, rows)
    assert s["conv_speed_vs_start_p10"] <= s["conv_speed_vs_start_median"] \
        <= s["conv_speed_vs_start_p90"]
    assert 200 < s["conv_per_cpu_s_median"] < 2000


def test_a_gone_helper_leaves_the_speed_empty_not_the_run_failed():
    probe = HostProbe()
    probe.proc.kill()
    probe.proc.wait()
    row = probe.sample(0.0)
    probe.close()
    assert row["speed_vs_start"] is None and row["spin_per_cpu_s"] is None
    assert 0 <= row["busy_share"] <= 1
    assert summary(probe, [row]) == {}


def test_a_watching_probe_samples_the_set_up_on_its_own_until_the_run_takes_it_over():
    probe = HostProbe().watch(0.05)
    try:
        time.sleep(0.5)
        early = probe.stop_watching()
        n = len(early)
        time.sleep(0.2)  # stopped: nothing more is sampled behind the run's back
        assert len(probe.stop_watching()) == n and 4 <= n <= 10, n
        times = [t for t, _ in early]
        assert times == sorted(times) and times[-1] < time.monotonic()
        rows = [{**row, "phase": "setup"} for _, row in early]
        rows += [{**probe.sample(t * 0.05), "phase": "run"} for t in range(5)]
    finally:
        probe.close()
    s = summary(probe, rows)
    # the run's raw mean over the set-up's (a median jumps between the machine's two speeds),
    # and the spread over the run's rows only
    assert s["spin_run_over_setup"] == round(
        s["spin_per_cpu_s_mean"] / s["spin_per_cpu_s_setup_mean"], 3)
    assert 0 <= s["spin_slow_share"] <= 1 and 0 <= s["spin_setup_slow_share"] <= 1
    assert s["spin_fast_over_slow"] >= 1
    assert s["spin_per_cpu_s_median"] == round(statistics.median(
        r["spin_per_cpu_s"] for r in rows if r["phase"] == "run"))


def test_two_speed_levels_are_found_where_the_samples_split():
    slow = [11.0, 11.5, 12.0, 10.8]
    fast = [19.5, 20.0, 20.5, 21.0, 19.9]
    lo, hi, cut = levels(slow + fast)
    assert lo == statistics.median(slow) and hi == statistics.median(fast)
    assert max(slow) < cut < min(fast)
    assert levels([7.0]) == (7.0, 7.0, 7.0)


@given(st.lists(st.floats(1.0, 100.0), min_size=2, max_size=40))
def test_the_split_leaves_the_least_spread_of_any_split(rates):
    """Against trying every split by brute force (the running sums must not drift from it)."""
    xs = sorted(rates)

    def spread(i: int) -> float:
        return sum((x - statistics.fmean(part)) ** 2 for part in (xs[:i], xs[i:]) for x in part)

    lo, hi, cut = levels(rates)
    best = min(spread(i) for i in range(1, len(xs)))
    got = [i for i in range(1, len(xs)) if (xs[i - 1] + xs[i]) / 2 == cut]
    assert lo <= hi and any(math.isclose(spread(i), best, rel_tol=1e-6, abs_tol=1e-6)
                            for i in got)
