"""Re-predict finished video trials offline: each trial's problem is rebuilt from what the run
saved (its topology.yaml and jobs.yaml, the run's profiles.json and decision in run.json), the
frame rates are predicted again with the model in testbed/kinds/video, and set beside the
measured ones. A change to the model can so be judged on dozens of saved trials in seconds
instead of re-running campaigns; with the model unchanged, the predictions equal the runs'.

Usage: python bench/dcei_replay.py results/dcei-fidelity [more campaign folders]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from testbed.kinds.video import spec as video_spec  # noqa: E402
from testbed.kinds.video.decision import WARMUP_S, build, fps_over_time, frame_key  # noqa: E402
from testbed.kinds.video.problem import Mapping  # noqa: E402
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
    jobs = pd.read_csv(run / "jobs.csv")
    jobs = jobs[jobs.status == "done"]
    return pd.DataFrame({"trial": trial.name, "scheduler": jobs.scheduler, "stream": jobs.job,
                         "detect_on": jobs.detect_on, "reid_on": jobs.reid_on,
                         "fps_measured": jobs.fps_measured,
                         "fps_predicted_run": jobs.fps_predicted,
                         "fps_predicted_now": jobs.job.map(again)})


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
    pd.set_option("display.width", 200)
    print(df.round(3).to_string(index=False))
    f = df.fidelity_now
    print(f"\n{len(df)} streams in {len(trials)} trials: measured / predicted now "
          f"{f.min():.2f}-{f.max():.2f}, median {f.median():.3f}, "
          f"within 0.9-1.1: {((f >= 0.9) & (f <= 1.1)).mean():.0%}, "
          f"mean |1 - x| {(f - 1).abs().mean():.3f}; predictions changed since the runs: "
          f"{int(((df.fps_predicted_now - df.fps_predicted_run).abs() > 1e-6).sum())}")


if __name__ == "__main__":
    main()
