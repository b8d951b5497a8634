"""Campaigns: grid x repetitions as tidy rows, atomic appends, resume without duplicates or
gaps, failed trials recorded with their reason, export and plots."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from testbed.campaign.export import export
from testbed.campaign.figures import plot
from testbed.campaign.run import run_campaign
from testbed.campaign.sweep import load_campaign
from testbed.errors import InputError
from tests.conftest import ROOT, cli, needs_root, small_emulated_campaign

JOBS = """
jobs:
  - name: pipe
    source: "*"
    input: 200kB
    duration: 30s
    tasks:
      a: {work: 2, memory: 256MB}
      b: {work: 4, memory: 256MB, after: {a: 50kB}}
repeat: 6
arrivals: {poisson_rate: 0.5, seed: 0}
"""


def campaign_file(tmp_path: Path, grid: str, reps: int = 2, mode: str = "simulated",
                  name: str = "c") -> Path:
    (tmp_path / "jobs.yaml").write_text(JOBS)
    path = tmp_path / "campaign.yaml"
    path.write_text(f"""
name: {name}
mode: {mode}
topology: {{generate: {{random_mesh: {{nodes: 6, degree: 3, bw_mean: 2, bw_var: 0.3}}}}}}
jobs: jobs.yaml
grid:
{grid}
repetitions: {reps}
""")
    return path


GRID_2X2 = "  scheduler: [otfa, lr]\n  topology.generate.random_mesh.bw_mean: [1, 10]"


def test_2x2_grid_with_2_repetitions_gives_8_tidy_rows(tmp_path):
    path = campaign_file(tmp_path, GRID_2X2)
    ran = run_campaign(path, root=tmp_path / "results", jobs=2)
    assert len(ran) == 8
    df = pd.read_csv(tmp_path / "results" / "c" / "trials.csv")
    assert len(df) == 8 and df.trial.is_unique and (df.status == "done").all()
    assert {"param:scheduler", "param:topology.generate.random_mesh.bw_mean", "seed",
            "repetition", "throughput_predicted_items_s", "waiting_s", "mode"} <= set(df)
    assert sorted(df.seed.unique()) == [0, 1]  # each repetition its own seed, recorded
    cells = df.groupby(["param:scheduler", "param:topology.generate.random_mesh.bw_mean"])
    assert cells.size().tolist() == [2, 2, 2, 2]
    # more bandwidth never hurts OTFA's predicted throughput here
    otfa = df[df["param:scheduler"] == "otfa"].groupby(
        "param:topology.generate.random_mesh.bw_mean").throughput_predicted_items_s.mean()
    assert otfa[10] >= otfa[1]
    assert (tmp_path / "results" / "c" / "campaign.json").exists()
    pngs = plot(tmp_path / "results" / "c")
    assert pngs and all(p.stat().st_size > 5000 for p in pngs)
    written = export(tmp_path / "results" / "c", "parquet")
    assert pd.read_parquet(written[0]).shape[0] == 8


def test_rerun_without_resume_refuses_and_resume_skips_done(tmp_path):
    path = campaign_file(tmp_path, GRID_2X2, reps=1)
    run_campaign(path, root=tmp_path / "results")
    with pytest.raises(InputError, match="--resume"):
        run_campaign(path, root=tmp_path / "results")
    assert run_campaign(path, root=tmp_path / "results", resume=True) == []


def test_killed_campaign_resumes_without_duplicates_or_gaps(tmp_path):
    path = campaign_file(tmp_path, "  scheduler: [otfa, otfs, tp, lr, br]", reps=4)
    results = tmp_path / "results"
    total = len(load_campaign(path).trials)
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from testbed.campaign.run import run_campaign; "
         "run_campaign(sys.argv[1], root=Path(sys.argv[2]))", str(path), str(results)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    table = results / "c" / "trials.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill it once some, not all, trials are recorded
        if table.exists() and 2 <= len(pd.read_csv(table)) < total:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = pd.read_csv(table)  # never corrupt: a complete CSV
    assert 2 <= len(partial) < total
    run_campaign(path, root=results, resume=True)
    final = pd.read_csv(table)
    assert len(final) == total and final.trial.is_unique
    assert set(final.trial) == {t.id for t in load_campaign(path).trials}
    assert list(final.trial[:len(partial)]) == list(partial.trial)  # appended, not rewritten


def test_an_invalid_trial_fails_the_dry_run_naming_it(tmp_path):
    grid = "  scheduler: [otfa]\n  topology.generate.random_mesh.degree: [3, 9]"
    path = campaign_file(tmp_path, grid, reps=1)  # degree 9 is impossible with 6 nodes
    res = cli("campaign", str(path), "--dry-run")
    msg = " ".join(res.stderr.split())
    assert res.returncode == 2 and "degree=9" in msg and "impossible with 6 nodes" in msg, msg
    for grid, expected in (("  topology.generate.random_mesh.bw_maen: [1]", "bw_maen"),
                           ("  scheduler: [otfa, nosuch]", "unknown scheduler 'nosuch'")):
        path = campaign_file(tmp_path, grid, reps=1)
        res = cli("campaign", str(path), "--dry-run")
        assert res.returncode == 2 and expected in res.stderr, res.stderr


def test_a_failing_trial_is_recorded_and_the_campaign_goes_on(tmp_path):
    from testbed import schedulers

    def broken(view, plan, jobs, now):
        raise RuntimeError("this scheduler always fails")

    schedulers.register("tbt-broken", broken, "fails on purpose")
    try:
        path = campaign_file(tmp_path, "  scheduler: [otfa, tbt-broken]", reps=1)
        run_campaign(path, root=tmp_path / "results")
    finally:
        del schedulers.REGISTRY["tbt-broken"]
    df = pd.read_csv(tmp_path / "results" / "c" / "trials.csv").set_index("scheduler")
    assert df.loc["otfa", "status"] == "done"
    assert df.loc["tbt-broken", "status"] == "failed"
    assert "this scheduler always fails" in df.loc["tbt-broken", "reason"]


def test_resume_of_a_changed_campaign_is_refused_with_the_changes(tmp_path):
    path = campaign_file(tmp_path, "  scheduler: [otfa]", reps=1)
    run_campaign(path, root=tmp_path / "results")
    path.write_text(path.read_text().replace("repetitions: 1", "repetitions: 1\nduration: 9s"))
    with pytest.raises(InputError, match=r"duration: None -> 9\.0"):
        run_campaign(path, root=tmp_path / "results", resume=True)
    (tmp_path / "jobs.yaml").write_text(JOBS.replace("repeat: 6", "repeat: 5"))
    with pytest.raises(InputError, match="jobs file contents changed"):
        run_campaign(path, root=tmp_path / "results", resume=True)
    ran = run_campaign(path, root=tmp_path / "results", resume=True, allow_changes=True)
    assert len(ran) == 1  # the changed trial has a new id: it runs beside the old row
    df = pd.read_csv(tmp_path / "results" / "c" / "trials.csv", dtype={"trial": str})
    assert len(df) == 2 and df.trial.is_unique
    history = json.loads((tmp_path / "results" / "c" / "campaign.json").read_text())["history"]
    assert [h["resume"] for h in history] == [False, True]


def test_digit_only_trial_ids_are_not_rerun_on_resume(tmp_path):
    from testbed.campaign import records

    table = tmp_path / "trials.csv"
    cols = ["trial", "status"]
    for tid in ("0123456789", "1e5", "12"):
        records.append(table, {"trial": tid, "status": "done"}, cols)
    assert records.done_ids(table) == {"0123456789", "1e5", "12"}
    assert table.read_text().count("\n") == 4  # header + one line per trial


def test_bad_campaign_files_are_clear_errors(tmp_path):
    path = campaign_file(tmp_path, "  colour: [red]")
    res = cli("campaign", str(path), "--dry-run")
    assert res.returncode == 2 and "grid.colour: is not a parameter a trial can vary" in \
        " ".join(res.stderr.split())


@needs_root
@pytest.mark.emulation
@pytest.mark.slow
def test_emulated_campaign_runs_trials_on_the_testbed(tmp_path):
    path = small_emulated_campaign(tmp_path, "emu", ["otfa", "lr"])
    run_campaign(path, root=tmp_path / "results")
    df = pd.read_csv(tmp_path / "results" / "emu" / "trials.csv")
    assert list(df.status) == ["done", "done"], df.reason.tolist()
    assert (df.jobs_done == 1).all() and (df.fidelity > 0.8).all()
    assert {"throughput_measured_items_s", "throughput_predicted_items_s",
            "latency_ms_p50"} <= set(df)
    files = export(tmp_path / "results" / "emu")
    assert {"items.csv", "events.csv", "node_speeds.csv", "runs.csv", "flows.csv"} <= {
        f.name for f in files}
    runs = pd.read_csv(tmp_path / "results" / "emu" / "export" / "runs.csv")
    assert len(runs) == 2 and (runs.incidents == 0).all() and "version:os-ken" in runs


FLAKY_PLUGIN = '''
from pathlib import Path

from testbed.schedulers import register
from testbed.schedulers.online import lr


def flaky(view, running, waiting, now=0.0):
    if (Path(__file__).parent / "fail-now").exists():
        raise RuntimeError("told to fail")
    return lr(view, running, waiting, now)


register("flaky", flaky, "least-requested, or fails while fail-now exists")
'''


def test_failed_trials_fail_the_command_and_retry_failed_runs_them_again(tmp_path):
    (tmp_path / "flaky.py").write_text(FLAKY_PLUGIN)
    (tmp_path / "fail-now").touch()
    path = campaign_file(tmp_path, "  scheduler: [otfa, flaky]", reps=1)
    path.write_text(path.read_text() + "plugins: [flaky.py]\n")
    out = ["--out", str(tmp_path / "results")]
    res = cli("campaign", str(path), *out)
    assert res.returncode == 1 and "1 done, 0 partial, 1 failed" in res.stdout, res.stdout
    assert "told to fail" in res.stdout
    res = cli("campaign", str(path), "--resume", *out)
    assert res.returncode == 0 and "0 trials run" in res.stdout and "--retry-failed" in \
        res.stdout and "None" not in res.stdout + res.stderr
    assert "flaky" in cli("campaign", str(path), "--retry-failed", "--dry-run", *out).stdout
    (tmp_path / "fail-now").unlink()
    res = cli("campaign", str(path), "--retry-failed", *out)
    assert res.returncode == 0 and "1 trials run: 1 done" in res.stdout, res.stdout
    table = tmp_path / "results" / "c"
    df = pd.read_csv(table / "trials.csv")
    assert len(df) == 2 and (df.status == "done").all() and df.trial.is_unique
    old = pd.read_csv(table / "failed_attempts.csv")  # the failure is kept, not lost
    assert list(old.scheduler) == ["flaky"] and "told to fail" in old.reason[0]


def test_a_trial_with_an_unfinished_job_is_partial_and_left_out_of_figures(tmp_path):
    from testbed.campaign import records
    from testbed.campaign.figures import FigureOptions
    from testbed.campaign.trials import _partial

    jobs = pd.DataFrame({"job": ["a", "b", "c"], "status": ["done", "failed", "done"],
                         "reason": ["", "tasks did not finish after the source ended", ""]})
    row = _partial({"status": "done", "reason": ""}, jobs, "jobs")
    assert row["status"] == "partial"
    assert row["reason"] == "1 of 3 jobs not done: tasks did not finish after the source ended"
    assert _partial({"status": "done", "reason": ""}, jobs.iloc[[0, 2]], "jobs")["status"] == \
        "done"
    results = tmp_path / "r"
    results.mkdir()
    cols = ["trial", "param:topology.bw", "scheduler", "status", "reason", "waiting_s"]
    for i, (status, bw, sched) in enumerate([("done", 1, "a"), ("done", 10, "a"),
                                             ("partial", 10, "a"), ("done", 1, "b"),
                                             ("done", 10, "b"), ("failed", 1, "b")]):
        records.append(results / "trials.csv", {"trial": f"t{i}", "param:topology.bw": bw,
                                                "scheduler": sched, "status": status,
                                                "reason": "", "waiting_s": i}, cols)
    paths = plot(results, FigureOptions(formats=("png", "pdf", "svg"), size=(4, 3), dpi=80))
    assert sorted(p.suffix for p in paths) == [".pdf", ".png", ".svg"]
    svg = next(p for p in paths if p.suffix == ".svg").read_text()
    assert "left out: 1 partial, 1 failed trial(s)" in svg  # said on the figure itself
    assert "link bandwidth (Mbit/s)" in svg and "waiting time before placement (s)" in svg
    with pytest.raises(InputError, match="choose from png, pdf, svg"):
        plot(results, FigureOptions(formats=("jpg",)))
