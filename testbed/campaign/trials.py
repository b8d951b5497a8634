"""Run one trial: simulated (the event-driven model) or emulated (up, run, collect, down).
Returns its row for trials.csv: every grid parameter, the seed, predicted and measured metrics
with units in the column names; a failure is a row too, with its reason."""

from __future__ import annotations

import secrets
import socket
import statistics
import time
import traceback
from pathlib import Path

import yaml

from testbed.campaign.sweep import Trial
from testbed.errors import TestbedError


def _mean(values) -> float:
    values = [v for v in values if v == v]  # drop NaN
    return statistics.mean(values) if values else float("nan")


METRICS = {  # (mode, workload kind) -> its columns in trials.csv
    ("simulated", "streams"): ["jobs", "jobs_unplaced", "throughput_predicted_items_s",
                               "waiting_s", "decision_ms_max"],
    ("emulated", "streams"): ["jobs", "jobs_done", "jobs_failed", "throughput_measured_items_s",
                              "throughput_predicted_items_s", "fidelity", "latency_ms_p50",
                              "latency_ms_min", "latency_ms_unloaded_predicted", "waiting_s"],
    ("emulated", "requests"): ["periods", "periods_done", "requests_failed",
                               "makespan_measured_s", "makespan_predicted_s", "fidelity",
                               "fidelity_min", "fidelity_max", "response_s_mean",
                               "response_s_predicted_mean", "decision_ms"],
    ("emulated", "training"): ["rounds", "rounds_done", "round_time_measured_s",
                               "round_time_predicted_s", "fidelity", "fidelity_min",
                               "fidelity_max", "round_time_predicted_shared_s",
                               "fidelity_shared", "accuracy_final", "server_peak_mem_mb",
                               "server_active_peak_mb", "cuts"],
    ("emulated", "video"): ["streams", "streams_placed", "fps_measured", "fps_predicted",
                            "fidelity", "fidelity_min", "fidelity_max", "latency_ms_p50",
                            "latency_ms_predicted", "reid_instances", "mapping"],
}


def workload_kind(jobs: dict) -> str:
    return jobs.get("kind", "streams") if isinstance(jobs, dict) else "streams"


def columns(grid_keys: list[str], mode: str, kind: str = "streams") -> list[str]:
    """trials.csv's columns, fixed for a campaign so that every row is one appended line."""
    return ["trial", *(f"param:{k}" for k in grid_keys), "scheduler", "repetition", "seed",
            "mode", "status", "reason", *METRICS[(mode, kind)], "trial_s", "host"]


def testbed_name(trial: Trial) -> str:
    """A testbed name unique to this run of the trial: two users (or two resumes) running the
    same campaign on one host never collide."""
    return f"cmp-{trial.id}-{secrets.token_hex(3)}"


def run_trial(trial: Trial, mode: str, trial_dir: Path, compute: str = "synthetic",
              name: str | None = None, plugins: list[str] | None = None,
              k_paths: int = 3, cluster: str | None = None) -> dict:
    """One trial; `plugins` are imported first (a worker process may not have them).
    `cluster`: the Ray cluster whose hosts build a split topology's parts."""
    from testbed.schedulers.plugins import load_module

    for p in plugins or []:
        load_module(p)
    trial_dir.mkdir(parents=True, exist_ok=True)
    topo_path, jobs_path = trial_dir / "topology.yaml", trial_dir / "jobs.yaml"
    name = name or testbed_name(trial)
    topo_path.write_text(yaml.safe_dump({**trial.topology, "name": name}))
    jobs_path.write_text(yaml.safe_dump(trial.jobs))
    row = _row(trial, mode)
    t0 = time.monotonic()
    try:
        if mode == "simulated":
            row.update(_simulated(trial, topo_path, jobs_path, k_paths))
        else:
            row.update(_emulated(trial, name, topo_path, jobs_path, trial_dir, compute,
                                 k_paths, cluster))
    except TestbedError as e:
        row.update(status="failed", reason=str(e))
    except Exception as e:  # a bug or an unexpected fault: recorded, the campaign goes on
        row.update(status="failed", reason=f"{type(e).__name__}: {e}")
        (trial_dir / "error.txt").write_text(traceback.format_exc())
    row["trial_s"] = round(time.monotonic() - t0, 3)
    return row


def _row(trial: Trial, mode: str) -> dict:
    return {"trial": trial.id, **{f"param:{k}": v for k, v in trial.params.items()},
            "scheduler": trial.scheduler, "repetition": trial.repetition, "seed": trial.seed,
            "mode": mode, "status": "done", "reason": "", "host": socket.gethostname()}


def failed_row(trial: Trial, mode: str, reason: str) -> dict:
    """The row of a trial that could not report one itself (its worker died)."""
    return {**_row(trial, mode), "status": "failed", "reason": reason, "host": ""}


def _simulated(trial: Trial, topo_path: Path, jobs_path: Path, k_paths: int = 3) -> dict:
    from testbed.schedulers.offline import simulate

    res = simulate(topo_path, jobs_path, trial.scheduler, k_paths)
    return {"jobs": len(res.jobs), "jobs_unplaced": res.unplaced,
            "throughput_predicted_items_s": res.mean_throughput,
            "waiting_s": res.mean_waiting_s, "decision_ms_max": res.decision_s_max * 1000}


def _emulated(trial: Trial, name: str, topo_path: Path, jobs_path: Path, trial_dir: Path,
              compute: str, k_paths: int = 3, cluster: str | None = None) -> dict:
    from testbed import lifecycle as api
    from testbed.experiment.options import RunOptions
    from testbed.kinds import run

    api.up(topo_path, cluster=cluster)
    try:
        jobs = run(name, jobs_path, RunOptions(scheduler=trial.scheduler,
                                               out_dir=trial_dir / "run", seed=trial.seed,
                                               duration_s=trial.duration_s, compute=compute,
                                               k_paths=k_paths))
    finally:
        api.down(name)
    if workload_kind(trial.jobs) == "requests":
        return _partial(_requests_row(jobs, trial_dir / "run"), jobs, "periods")
    if workload_kind(trial.jobs) == "training":
        return _training_row(jobs, trial.jobs, trial_dir / "run")
    if workload_kind(trial.jobs) == "video":
        return _video_row(jobs)
    done = jobs[jobs.status == "done"]
    return _partial({"jobs": len(jobs), "jobs_done": len(done), "jobs_failed": int(
        (jobs.status == "failed").sum()),
        "throughput_measured_items_s": _mean(done.throughput_measured_items_s),
        "throughput_predicted_items_s": _mean(done.throughput_predicted_items_s),
        "fidelity": _mean(done.fidelity),
        "latency_ms_p50": _mean(done.latency_ms_p50),
        "latency_ms_min": _mean(done.latency_ms_min),
        "latency_ms_unloaded_predicted": _mean(done.latency_ms_unloaded_predicted),
        "waiting_s": _mean(jobs.waiting_s)}, jobs, "jobs")


def _partial(row: dict, units, what: str) -> dict:
    """A trial whose jobs (or periods) did not all finish is `partial`, not `done`: its means
    cover only the finished ones, so plots leave it out and say so."""
    bad = units[units.status != "done"] if len(units) else units
    if len(bad):
        first = next((r for r in bad.reason if isinstance(r, str) and r), bad.status.iloc[0])
        row.update(status="partial",
                   reason=f"{len(bad)} of {len(units)} {what} not done: {first}")
    return row


def _requests_row(periods, run_dir: Path) -> dict:
    import pandas as pd

    done = periods[periods.status == "done"]
    reqs = pd.read_csv(run_dir / "requests.csv")
    ok = reqs[reqs.status == "done"]
    return {"periods": len(periods), "periods_done": len(done),
            "requests_failed": int((reqs.status != "done").sum()),
            "makespan_measured_s": _mean(done.makespan_measured_s),
            "makespan_predicted_s": _mean(done.makespan_predicted_s),
            "fidelity": _mean(done.fidelity),
            "fidelity_min": float(done.fidelity.min()) if len(done) else float("nan"),
            "fidelity_max": float(done.fidelity.max()) if len(done) else float("nan"),
            "response_s_mean": _mean(ok.response_time_measured_s),
            "response_s_predicted_mean": _mean(ok.response_time_predicted_s),
            "decision_ms": _mean(periods.decision_ms)}


def _training_row(rounds, spec: dict, run_dir: Path) -> dict:
    """Means over the rounds after the first (round 0 also opens the connections)."""
    import json

    meta = json.loads((run_dir / "run.json").read_text())
    steady = rounds[rounds["round"] > 0] if len(rounds) > 1 else rounds
    cuts = (meta.get("decision") or {}).get("cuts", {})
    row = {"rounds": int(spec.get("rounds", 20)), "rounds_done": len(rounds),
           "round_time_measured_s": _mean(steady.round_time_measured_s) if len(rounds)
           else float("nan"),
           "round_time_predicted_s": float(rounds.round_time_predicted_s.iloc[0])
           if len(rounds) else float("nan"),
           "fidelity": _mean(steady.fidelity) if len(rounds) else float("nan"),
           "fidelity_min": float(steady.fidelity.min()) if len(rounds) else float("nan"),
           "fidelity_max": float(steady.fidelity.max()) if len(rounds) else float("nan"),
           "round_time_predicted_shared_s":
               float(rounds.round_time_predicted_shared_s.iloc[0]) if len(rounds) and
               "round_time_predicted_shared_s" in rounds else float("nan"),
           "fidelity_shared": _mean(steady.fidelity_shared) if len(rounds) and
               "fidelity_shared" in rounds else float("nan"),
           "accuracy_final": float(rounds.accuracy.iloc[-1]) if len(rounds) else float("nan"),
           "server_peak_mem_mb": float(rounds.server_peak_mem_mb.max()) if len(rounds)
           else float("nan"),
           "server_active_peak_mb": float(rounds.server_active_peak_mb.max()) if len(rounds)
           else float("nan"),
           "cuts": " ".join(str(c) for c in cuts.values())}
    if meta.get("status") != "done" or len(rounds) < row["rounds"]:
        row.update(status="partial" if len(rounds) else "failed",
                   reason=f"{len(rounds)} of {row['rounds']} rounds done: "
                          f"{meta.get('reason') or meta.get('status')}")
    return row


def _video_row(streams) -> dict:
    """Throughput as the thesis defines it: the mean frame rate over all streams (a stream
    left out for memory counts as 0 fps); fidelity over the placed ones."""
    placed = streams[streams.status != "not placed"]
    row = {"streams": len(streams), "streams_placed": len(placed),
           "fps_measured": float(streams.fps_measured.fillna(0).mean()),
           "fps_predicted": float(streams.fps_predicted.fillna(0).mean()),
           "fidelity": _mean(placed.fidelity),
           "fidelity_min": float(placed.fidelity.min()) if len(placed) else float("nan"),
           "fidelity_max": float(placed.fidelity.max()) if len(placed) else float("nan"),
           "latency_ms_p50": _mean(placed.latency_ms_p50),
           "latency_ms_predicted": _mean(placed.latency_ms_predicted),
           "reid_instances": int(placed.reid_on.astype(str).str.cat(
               placed.reid_instance.astype(str)).nunique()) if len(placed) else 0,
           "mapping": " ".join(f"{r.job}:{r.detect_on}>{r.reid_on}"
                               for r in placed.itertuples())}
    bad = placed[placed.status != "done"]
    if len(bad):
        row.update(status="partial", reason=f"{len(bad)} of {len(placed)} streams not done: "
                   f"{bad.reason.iloc[0]}")
    return row
