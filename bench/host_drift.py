"""Did the machine change speed between a run's profile and its measured steps, and does
that account for the steps that ran longer than they were priced?

Video runs (with a pilot):
Per device of each trial: its median detection time in the measured run over the pilot's
(`cost_ratio`), beside how much slower the machine's calibration loop ran then than during
the pilot (`machine_slowdown`, from host.csv: each second's speed against the run's start),
and how much slower a small torch convolution ran (`conv_slowdown`, where host.csv has it).
If the machine is what changed, the two move together and a stream's measured / predicted
frame rate is about 1 / slowdown. Steps are counted after each part's first 2 s (the
measured run's warm-up: decision.WARMUP_S), as the prediction counts them.

Training runs: per device and steady round, measured / predicted round time and the device's
own compute over its profile, beside the convolution's and the loop's raw rates in that round
over their medians across every round given (not against each run's start: the start is read
on a quiet machine, and a run's start can read twice another's): if the machine is what
moved, a round run at 0.9 of the usual speed takes about 1 / 0.9 of its prediction.

Usage: python bench/host_drift.py results/dcei-fidelity results/edgesplit-fidelity-lenet
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from testbed.kinds.video.decision import WARMUP_S  # noqa: E402


def _window(host: pd.DataFrame, start: float, end: float, column: str) -> float:
    """The machine's mean speed (against the run's start) between two wall-clock times: a
    median jumps between the two speeds this VM alternates (hostspeed.levels)."""
    if column not in host:
        return float("nan")
    inside = host[(host.t_wall >= start) & (host.t_wall <= end)][column].dropna()
    return float(inside.mean()) if len(inside) else float("nan")


def drift(trial: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per detecting device: its cost ratio beside the machine's; per stream: its fidelity as
    reported and as it would read had the prediction known the convolution's slowdown."""
    run = trial / "run"
    meta = json.loads((run / "run.json").read_text())
    host = pd.read_csv(run / "host.csv")
    host["t_wall"] = meta["epoch0_s"] + host.t_s
    jobs = pd.read_csv(run / "jobs.csv")
    jobs = jobs[jobs.status == "done"]
    on = dict(zip(jobs.job, jobs.detect_on, strict=True))
    pilot = pd.DataFrame([r for line in (run / "traces" / "pilot.jsonl").read_text().splitlines()
                          if (r := json.loads(line))["type"] == "frame"])
    frames = pd.read_csv(run / "frames.csv")
    parts = {}
    for name, f in (("pilot", pilot), ("run", frames)):
        f = f[f.stream.isin(on)].assign(device=lambda x: x.stream.map(on),
                                         cost=lambda x: x.t_detect_end - x.t_detect_start)
        since = f.t_detect_start.min() + WARMUP_S
        f = f[f.t_detect_start >= since]
        end = f.t_detect_end.max()
        parts[name] = (f, _window(host, since, end, "speed_vs_start"),
                       _window(host, since, end, "conv_speed_vs_start"))
    (pf, pilot_speed, pilot_conv), (rf, run_speed, run_conv) = parts["pilot"], parts["run"]
    rows = []
    for device in sorted(set(on.values())):
        p, r = pf[pf.device == device].cost, rf[rf.device == device].cost
        if len(p) and len(r):
            cost = statistics.median(r)
            rows.append({"trial": trial.name, "scheduler": meta["scheduler"],
                         "pilot_s": float(meta["workload"]["pilot_s"]), "device": device,
                         "cost_s": cost, "cost_ratio": cost / statistics.median(p),
                         "machine_slowdown": pilot_speed / run_speed,
                         "conv_slowdown": pilot_conv / run_conv,
                         "fidelity_streams": " ".join(
                             f"{f:.2f}" for f in (jobs.fps_measured / jobs.fps_predicted)[
                                 jobs.detect_on == device])})
    fidelity = jobs.fps_measured / jobs.fps_predicted
    streams = pd.DataFrame({"trial": trial.name, "scheduler": meta["scheduler"],
                            "pilot_s": float(meta["workload"]["pilot_s"]),
                            "mapping": " ".join(f"{j}:{d}" for j, d in sorted(on.items())),
                            "fidelity": fidelity,
                            "at_conv_speed": fidelity * pilot_conv / run_conv})
    return pd.DataFrame(rows), streams


def training_drift(trial: Path) -> pd.DataFrame:
    """Per device and steady round (round 0 also opens the connections): its fidelity and
    compute ratio beside the machine's speed in that round."""
    run = trial / "run"
    meta = json.loads((run / "run.json").read_text())
    host = pd.read_csv(run / "host.csv")
    host["t_wall"] = meta["epoch0_s"] + host.t_s
    server = pd.DataFrame([json.loads(line) for line in
                           (run / "traces" / "server.jsonl").read_text().splitlines()
                           if line.strip()])
    devices = pd.read_csv(run / "devices.csv").merge(
        server[["device", "round", "start", "t_device_done"]], on=["device", "round"])
    rows = []
    for r in devices[devices["round"] >= 1].itertuples():
        rows.append({"trial": trial.name, "scheduler": meta["scheduler"], "device": r.device,
                     "round": r.round,
                     "fidelity": r.round_time_measured_s / r.round_time_predicted_s,
                     "compute_ratio": r.compute_s / r.compute_predicted_s
                     if r.compute_predicted_s else float("nan"),
                     "loop_rate": _window(host, r.start, r.t_device_done, "spin_per_cpu_s"),
                     "conv_rate": _window(host, r.start, r.t_device_done, "conv_per_cpu_s")})
    return pd.DataFrame(rows)


def report_training(trials: list[Path]) -> None:
    df = pd.concat([training_drift(t) for t in trials], ignore_index=True)
    df["loop_speed"] = df.loop_rate / df.loop_rate.median()
    df["conv_speed"] = df.conv_rate / df.conv_rate.median()
    df["at_conv_speed"] = df.fidelity * df.conv_speed
    print(df.round(3).to_string(index=False))
    print(f"\n{len(df)} device-rounds: correlation of fidelity and 1 / conv_speed "
          f"{df.fidelity.corr(1 / df.conv_speed):.2f}, of compute_ratio and 1 / conv_speed "
          f"{df.compute_ratio.corr(1 / df.conv_speed):.2f}, of fidelity and 1 / loop_speed "
          f"{df.fidelity.corr(1 / df.loop_speed):.2f}; conv_speed "
          f"{df.conv_speed.min():.2f}-{df.conv_speed.max():.2f}")
    for col, what in (("fidelity", "as reported"),
                      ("at_conv_speed", "scaled by the round's conv speed")):
        x = df[col].dropna()
        print(f"  {what:35s} within 0.9-1.1: {x.between(0.9, 1.1).mean():4.0%} "
              f"({x.min():.2f}-{x.max():.2f}, median {x.median():.3f})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("campaigns", nargs="+", type=Path)
    a = ap.parse_args()
    with_host = [t for c in a.campaigns for t in sorted(c.glob("trials/*"))
                 if (t / "run" / "host.csv").exists()]
    training = [t for t in with_host if (t / "run" / "rounds.csv").exists()]
    trials = [t for t in with_host if (t / "run" / "traces" / "pilot.jsonl").exists()]
    if not trials and not training:
        raise SystemExit("no video trials with a pilot and no training trials with host.csv in "
                         + ", ".join(map(str, a.campaigns)))
    pd.set_option("display.width", 200)
    if training:
        report_training(training)
    if not trials:
        return
    parts = [drift(t) for t in trials]
    df = pd.concat([d for d, _ in parts], ignore_index=True)
    streams = pd.concat([s for _, s in parts], ignore_index=True)
    print(df.round(3).to_string(index=False))
    per_trial = df.groupby("trial").agg(scheduler=("scheduler", "first"),
                                        cost_ratio=("cost_ratio", "median"),
                                        machine_slowdown=("machine_slowdown", "first"),
                                        conv_slowdown=("conv_slowdown", "first"))
    print("\nper trial (median over devices):")
    print(per_trial.round(3).to_string())
    print(f"\ncorrelation of cost_ratio and machine_slowdown over {len(df)} devices: "
          f"{df.cost_ratio.corr(df.machine_slowdown):.2f}; over {len(per_trial)} trials: "
          f"{per_trial.cost_ratio.corr(per_trial.machine_slowdown):.2f}")
    if df.conv_slowdown.notna().any():
        print(f"correlation of cost_ratio and conv_slowdown over {len(df)} devices: "
              f"{df.cost_ratio.corr(df.conv_slowdown):.2f}; over {len(per_trial)} trials: "
              f"{per_trial.cost_ratio.corr(per_trial.conv_slowdown):.2f}")
        print(f"\n{len(streams)} streams, measured / predicted fps, within 0.9-1.1:")
        for col, what in (("fidelity", "as reported"),
                          ("at_conv_speed", "the prediction scaled by the run's conv_slowdown")):
            x = streams[col].dropna()
            print(f"  {what:50s} {x.between(0.9, 1.1).mean():4.0%}  "
                  f"({x.min():.2f}-{x.max():.2f}, median {x.median():.3f})")
    by_pilot(df, streams)


def by_pilot(df: pd.DataFrame, streams: pd.DataFrame) -> None:
    """Per pilot length (campaigns may vary it): does a longer pilot price the run closer?
    Beside it the floor no pilot can beat: trials of one decision (same scheduler, same
    mapping), their devices' detection costs in the run over the geometric mean of theirs."""
    print("\nby pilot length:")
    for pilot_s, d in df.groupby("pilot_s"):
        s = streams[streams.pilot_s == pilot_s].fidelity
        c = d.cost_ratio
        spread = c.map(lambda x: abs(math.log(x))).mean()
        print(f"  {pilot_s:4.0f} s: device cost_ratio {c.min():.2f}-{c.max():.2f} (within "
              f"0.9-1.1: {c.between(0.9, 1.1).mean():.0%}, mean |log| {spread:.3f}); streams "
              f"within 0.9-1.1: {s.between(0.9, 1.1).mean():.0%} ({s.min():.2f}-{s.max():.2f}, "
              f"{len(s)} streams)")
    key = df.trial.map(dict(zip(streams.trial, streams.scheduler + " " + streams.mapping,
                                strict=False)))
    repeats = df.assign(key=key).groupby(["key", "device"]).cost_s
    floor = (df.cost_s / repeats.transform(lambda x: math.exp(x.map(math.log).mean())))[
        repeats.transform("size") > 1]
    if len(floor):
        print(f"  run against run, one decision ({len(floor)} device-trials): detection cost "
              f"over the repeats' geometric mean {floor.min():.2f}-{floor.max():.2f}, "
              f"within 0.95-1.05: {floor.between(0.95, 1.05).mean():.0%}")


if __name__ == "__main__":
    main()
