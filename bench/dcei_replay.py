"""Re-predict finished video trials offline: each trial's problem is rebuilt from what the run
saved (its topology.yaml and jobs.yaml, the run's profiles.json and decision in run.json), the
frame rates are predicted again with the model in testbed/kinds/video, and set beside the
measured ones. A change to the model can so be judged on dozens of saved trials in seconds
instead of re-running campaigns; with the model unchanged, the predictions equal the runs'.

More columns tell where a misprediction comes from: `fps_played` plays the decision out
with the edge worker's own rules (testbed/kinds/video/playback.py) on the profiled step
costs; `fps_predicted_run_costs` and `fps_played_run_costs` predict both ways with the step
costs the run itself measured instead (each device's median detection from frames.csv, its
re-ID costs scaled by the median of measured over profiled batch time in reid.csv). Good
predictions on the run's costs and poor ones on the profiled costs put the error in the
profiles, not in the model. Runs with a pilot add both predictions on the pilot's costs
(`fps_predicted_pilot`, max-min; `fps_played_pilot`, played out, which is what such runs
report as `fps_predicted`).

Usage: python bench/dcei_replay.py results/dcei-fidelity [more campaign folders]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from testbed.kinds.video import spec as video_spec  # noqa: E402
from testbed.kinds.video.decision import WARMUP_S, build, fps_over_time, frame_key  # noqa: E402
from testbed.kinds.video.measured import measured_costs  # noqa: E402
from testbed.kinds.video.playback import play  # noqa: E402
from testbed.kinds.video.problem import Mapping, Problem  # noqa: E402
from testbed.schedulers.network import NetworkView  # noqa: E402
from testbed.topology import load  # noqa: E402


def replay(trial: Path) -> pd.DataFrame:
    """One trial's streams: measured and re-predicted frame rates."""
    run = trial / "run"
    topo = load(trial / "topology.yaml")
    w = video_spec.loads((trial / "jobs.yaml").read_text(), str(trial / "jobs.yaml"), topo)
    meta = json.loads((run / "run.json").read_text())
    prof = json.loads((run / "profiles.json").read_text())
    horizon = float((meta.get("workload") or {}).get("duration_s")
                    or (meta.get("options") or {}).get("duration") or 20.0)
    first = prof[w.devices[0]]
    problem = build(w, NetworkView.from_topology(topo), {d: prof[d] for d in w.devices},
                    {c.name: first["frame_bytes"][frame_key(c)] for c in w.cameras}, horizon,
                    {c.name: prof[f"camera {c.spec.source}"]["capture_s"][frame_key(c)]
                     for c in w.cameras})
    d = meta["decision"]
    mapping = Mapping(d["detect"], {k: int(v) for k, v in d["reid"].items()},
                      tuple(d["instances"]), tuple(d["not_placed"]))
    again = fps_over_time(problem, mapping, w, min(WARMUP_S, horizon / 2), horizon)
    played = play(problem, mapping, {c.name: c.pedestrians for c in w.cameras},
                  {c.name: c.spec.tasks.reid.every for c in w.cameras},
                  min(WARMUP_S, horizon / 2), horizon)
    costs = run_costs(problem, mapping, run)
    again_run = fps_over_time(costs, mapping, w, min(WARMUP_S, horizon / 2), horizon)
    played_run = play(costs, mapping, {c.name: c.pedestrians for c in w.cameras},
                      {c.name: c.spec.tasks.reid.every for c in w.cameras},
                      min(WARMUP_S, horizon / 2), horizon)
    pilot = meta.get("pilot_costs") or {}
    on_pilot = replace(problem, detect_s={d: c["detect_s"] for d, c in pilot.items()},
                       reid_s={d: c["reid_crop_s"] for d, c in pilot.items()},
                       reid_call_s={d: c["reid_call_s"] for d, c in pilot.items()})
    again_pilot = fps_over_time(on_pilot, mapping, w, min(WARMUP_S, horizon / 2), horizon) \
        if pilot else {}
    played_pilot = play(on_pilot, mapping, {c.name: c.pedestrians for c in w.cameras},
                        {c.name: c.spec.tasks.reid.every for c in w.cameras},
                        min(WARMUP_S, horizon / 2), horizon) if pilot else {}
    jobs = pd.read_csv(run / "jobs.csv")
    jobs = jobs[jobs.status == "done"]
    decided = jobs.fps_decided if "fps_decided" in jobs else jobs.fps_predicted
    return pd.DataFrame({"trial": trial.name, "scheduler": jobs.scheduler, "stream": jobs.job,
                         "detect_on": jobs.detect_on, "reid_on": jobs.reid_on,
                         "fps_measured": jobs.fps_measured,
                         "fps_predicted_run": decided,
                         "fps_predicted_pilot": jobs.job.map(again_pilot) if pilot
                         else float("nan"),
                         "fps_played_pilot": jobs.job.map(played_pilot) if pilot
                         else float("nan"),
                         "fps_predicted_now": jobs.job.map(again),
                         "fps_played": jobs.job.map(played),
                         "fps_predicted_run_costs": jobs.job.map(again_run),
                         "fps_played_run_costs": jobs.job.map(played_run)})


def run_costs(p: Problem, m: Mapping, run: Path) -> Problem:
    """The problem with the step costs the run measured instead of the profiled ones."""
    frames = pd.read_csv(run / "frames.csv")
    batches = pd.read_csv(run / "reid.csv") if (run / "reid.csv").stat().st_size > 1 \
        else pd.DataFrame(columns=["instance", "crops", "t_start", "t_end"])
    return measured_costs(p, m, frames.to_dict("records"), batches.to_dict("records"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("campaigns", nargs="+", type=Path)
    a = ap.parse_args()
    trials = [t for c in a.campaigns for t in sorted(c.glob("trials/*"))
              if (t / "run" / "jobs.csv").exists() and (t / "run" / "profiles.json").exists()]
    if not trials:
        raise SystemExit("no finished video trials (trials/*/run/jobs.csv) in "
                         + ", ".join(map(str, a.campaigns)))
    df = pd.concat([replay(t) for t in trials], ignore_index=True)
    df["fidelity_now"] = df.fps_measured / df.fps_predicted_now
    df["fidelity_played"] = df.fps_measured / df.fps_played
    pd.set_option("display.width", 200)
    pd.set_option("display.max_rows", 1000)
    print(df.round(3).to_string(index=False))
    print(f"\n{len(df)} streams in {len(trials)} trials, measured / predicted; predictions "
          "changed since the runs: "
          f"{int(((df.fps_predicted_now - df.fps_predicted_run).abs() > 1e-6).sum())}")
    df["fidelity_run_costs"] = df.fps_measured / df.fps_predicted_run_costs
    df["fidelity_played_run_costs"] = df.fps_measured / df.fps_played_run_costs
    df["fidelity_pilot"] = df.fps_measured / df.fps_predicted_pilot
    df["fidelity_played_pilot"] = df.fps_measured / df.fps_played_pilot
    for col, what in (("fidelity_now", "max-min shares"), ("fidelity_played", "played out"),
                      ("fidelity_pilot", "max-min shares on the pilot's costs"),
                      ("fidelity_played_pilot", "played out on the pilot's costs"),
                      ("fidelity_run_costs", "max-min shares on the run's costs"),
                      ("fidelity_played_run_costs", "played out on the run's costs")):
        f = df[col].dropna()
        if f.empty:
            continue
        print(f"  {what:36s} {f.min():.2f}-{f.max():.2f}, median {f.median():.3f}, "
              f"within 0.9-1.1: {((f >= 0.9) & (f <= 1.1)).mean():.0%}, "
              f"mean |1 - x| {(f - 1).abs().mean():.3f}")


if __name__ == "__main__":
    main()
