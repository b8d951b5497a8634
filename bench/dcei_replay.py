"""Re-predict finished video trials offline: each trial's problem is rebuilt from what the run
saved (its topology.yaml and jobs.yaml, the run's profiles.json and decision in run.json), the
frame rates are predicted again with the model in testbed/kinds/video, and set beside the
measured ones. A change to the model can so be judged on dozens of saved trials in seconds
instead of re-running campaigns; with the model unchanged, the predictions equal the runs'.

More columns tell where a misprediction comes from: `fps_played` plays the decision out
with the edge worker's own rules (testbed/kinds/video/playback.py) on the profiled step
costs; `fps_predicted_run_costs` and `fps_played_run_costs` predict both ways with the step
costs the run itself measured instead (each device's median detection from frames.csv, its
re-ID cost per call and per crop fitted to reid.csv). Good predictions on the run's costs and
poor ones on the profiled costs put the error in the profiles, not in the model.

Usage: python bench/dcei_replay.py results/dcei-fidelity [more campaign folders]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from testbed.kinds.video import spec as video_spec  # noqa: E402
from testbed.kinds.video.decision import WARMUP_S, build, fps_over_time, frame_key  # noqa: E402
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
    horizon = float((meta.get("options") or {}).get("duration") or 20.0)
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
    jobs = pd.read_csv(run / "jobs.csv")
    jobs = jobs[jobs.status == "done"]
    return pd.DataFrame({"trial": trial.name, "scheduler": jobs.scheduler, "stream": jobs.job,
                         "detect_on": jobs.detect_on, "reid_on": jobs.reid_on,
                         "fps_measured": jobs.fps_measured,
                         "fps_predicted_run": jobs.fps_predicted,
                         "fps_predicted_now": jobs.job.map(again),
                         "fps_played": jobs.job.map(played),
                         "fps_predicted_run_costs": jobs.job.map(again_run),
                         "fps_played_run_costs": jobs.job.map(played_run)})


def run_costs(p: Problem, m: Mapping, run: Path) -> Problem:
    """The problem with the step costs the run measured instead of the profiled ones."""
    frames = pd.read_csv(run / "frames.csv")
    frames["device"] = frames.stream.map(m.detect)
    detect = dict(p.detect_s)
    for dev, g in frames.groupby("device"):
        detect[dev] = float((g.detect_ms / 1000 - g.crops * p.crop_s.get(dev, 0.0)).median())
    per_crop, per_call = dict(p.reid_s), dict(p.reid_call_s)
    batches = pd.read_csv(run / "reid.csv") if (run / "reid.csv").stat().st_size > 1 \
        else pd.DataFrame(columns=["device", "crops", "t_start", "t_end"])
    for dev, g in batches.groupby("device"):
        took = g.t_end - g.t_start
        if g.crops.nunique() > 1:
            slope, intercept = np.polyfit(g.crops, took, 1)
            per_crop[dev], per_call[dev] = max(float(slope), 0.0), max(float(intercept), 0.0)
        else:  # one batch size only: keep the profile's split between call and crops
            per_crop[dev] = max(float(took.median()) - per_call[dev], 0.0) / g.crops.iloc[0]
    return replace(p, detect_s=detect, reid_s=per_crop, reid_call_s=per_call)


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
    for col, what in (("fidelity_now", "max-min shares"), ("fidelity_played", "played out"),
                      ("fidelity_run_costs", "max-min shares on the run's costs"),
                      ("fidelity_played_run_costs", "played out on the run's costs")):
        f = df[col]
        print(f"  {what:34s} {f.min():.2f}-{f.max():.2f}, median {f.median():.3f}, "
              f"within 0.9-1.1: {((f >= 0.9) & (f <= 1.1)).mean():.0%}, "
              f"mean |1 - x| {(f - 1).abs().mean():.3f}")


if __name__ == "__main__":
    main()
