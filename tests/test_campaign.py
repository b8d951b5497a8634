"""Campaigns: grid x repetitions as tidy rows, atomic appends, resume without duplicates or
gaps, failed trials recorded with their reason, export and plots."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from testbed.campaign.export import export, plot
from testbed.campaign.run import run_campaign
from testbed.campaign.sweep import load_campaign
from testbed.errors import InputError
from tests.conftest import ROOT, cli, needs_root

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


def test_a_failing_trial_is_recorded_and_the_campaign_goes_on(tmp_path):
    grid = "  scheduler: [otfa]\n  topology.generate.random_mesh.degree: [3, 9]"
    path = campaign_file(tmp_path, grid, reps=1)  # degree 9 is impossible with 6 nodes
    run_campaign(path, root=tmp_path / "results")
    df = pd.read_csv(tmp_path / "results" / "c" / "trials.csv").set_index(
        "param:topology.generate.random_mesh.degree")
    assert df.loc[3, "status"] == "done"
    assert df.loc[9, "status"] == "failed"
    assert "degree 9.0 is impossible with 6 nodes" in df.loc[9, "reason"]


def test_bad_campaign_files_are_clear_errors(tmp_path):
    path = campaign_file(tmp_path, "  colour: [red]")
    res = cli("campaign", str(path), "--dry-run")
    assert res.returncode == 2 and "grid.colour: is not a parameter a trial can vary" in \
        " ".join(res.stderr.split())


@needs_root
@pytest.mark.emulation
@pytest.mark.slow
def test_emulated_campaign_runs_trials_on_the_testbed(tmp_path):
    (tmp_path / "jobs.yaml").write_text("""
jobs:
  - {name: chain, source: n1, input: 20kB, duration: 6s,
     tasks: {t: {work: 0.01, memory: 64MB, node: n3}}}
""")
    path = tmp_path / "campaign.yaml"
    path.write_text("""
name: emu
mode: emulated
topology: {defaults: {node: {cpu: 0.3}}, generate: {random_mesh: {nodes: 4, degree: 2, bw_mean: 2}}}
jobs: jobs.yaml
grid: {scheduler: [otfa, lr]}
repetitions: 1
""")
    run_campaign(path, root=tmp_path / "results")
    df = pd.read_csv(tmp_path / "results" / "emu" / "trials.csv")
    assert list(df.status) == ["done", "done"], df.reason.tolist()
    assert (df.jobs_done == 1).all() and (df.fidelity > 0.8).all()
    assert {"throughput_measured_items_s", "throughput_predicted_items_s",
            "latency_ms_p50"} <= set(df)
    files = export(tmp_path / "results" / "emu")
    assert any(f.name == "items.csv" for f in files)
