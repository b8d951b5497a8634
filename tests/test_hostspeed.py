"""The machine's speed sampled during runs (host.csv): what it reads against its own start,
and a helper that is gone."""

import statistics

from testbed.experiment.hostspeed import HostProbe, summary


def test_the_probe_reads_about_one_against_its_start_and_its_helper_ends_with_it():
    probe = HostProbe()
    try:
        rows = [probe.sample(float(t)) for t in range(7)]
    finally:
        probe.close()
    assert probe.proc.poll() is not None
    speeds = [r["speed_vs_start"] for r in rows]
    # one probe is a few milliseconds: on this VM under load one reads 0.8-1.5x another
    assert 0.6 < statistics.median(speeds) < 1.6, speeds
    assert all(0 <= r["steal_share"] <= 1 and 0 <= r["busy_share"] <= 1 for r in rows)
    s = summary(probe.reference, rows)
    assert s["speed_vs_start_p10"] <= s["speed_vs_start_median"] <= s["speed_vs_start_p90"]


def test_a_gone_helper_leaves_the_speed_empty_not_the_run_failed():
    probe = HostProbe()
    probe.proc.kill()
    probe.proc.wait()
    row = probe.sample(0.0)
    probe.close()
    assert row["speed_vs_start"] is None and row["spin_per_cpu_s"] is None
    assert 0 <= row["busy_share"] <= 1
    assert summary(probe.reference, [row]) == {}
