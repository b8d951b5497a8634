"""Re-predict finished training trials offline: each trial's round-time model is rebuilt from
what the run saved (the nodes' block profiles in profiles.json, the decision and workload in
run.json, the server mode in rounds.csv) and every device's round is predicted again, by eq.
4.5 and with the server shared, beside the measured one. A change to the model can so be
judged on every saved trial in seconds instead of re-running campaigns.

Usage: python bench/edgesplit_replay.py results/edgesplit-table4.5 [more campaign folders]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from testbed.kinds.training.problem import BlockProfile, build  # noqa: E402


def replay(trial: Path) -> pd.DataFrame:
    """One trial's devices in its steady rounds (round 0 also opens the connections)."""
    run = trial / "run"
    meta = json.loads((run / "run.json").read_text())
    w, d = meta["workload"], meta["decision"]
    rounds = pd.read_csv(run / "rounds.csv")
    mode = str(rounds.server_mode.iloc[0])
    share = str(rounds.server_share.iloc[0]) if "server_share" in rounds else "shared"
    profiles = {n: BlockProfile.from_dict(p)
                for n, p in json.loads((run / "profiles.json").read_text()).items()}
    devices = tuple(w["devices"])
    problem = build(devices, profiles, w["server"], dict.fromkeys(devices, 1 << 50),
                    int(w["batches_per_round"]), float(w["total_bandwidth_mbit"]),
                    one_batch_at_a_time=mode != "split-nonpipe",
                    server_per_device=share == "per-device")
    cuts = np.array([d["cuts"][n] for n in devices])
    bw = np.array([d["bandwidth_mbit"][n] for n in devices])
    eq45 = dict(zip(devices, problem.round_times(cuts, bw), strict=True))
    shared = dict(zip(devices, problem.shared_server_round_times(cuts, bw), strict=True))
    dev = pd.read_csv(run / "devices.csv")
    dev = dev[dev["round"] >= min(1, int(dev["round"].max()))]
    return pd.DataFrame({
        "trial": trial.name, "strategy": d["strategy"], "server_mode": mode, "share": share,
        "model": w["model"], "bw": float(w["total_bandwidth_mbit"]), "device": dev.device,
        "round": dev["round"], "cut": dev.cut, "measured_s": dev.round_time_measured_s,
        "eq45_s": dev.device.map(eq45), "shared_run_s": dev.round_time_predicted_shared_s,
        "shared_now_s": dev.device.map(shared),
        # the parts of the round against their profiles (as the run predicted them)
        "dev_part": dev.compute_s / dev.compute_predicted_s,
        "srv_part": dev.server_compute_s / dev.server_compute_predicted_s})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("campaigns", nargs="+", type=Path)
    a = ap.parse_args()
    trials = [t for c in a.campaigns for t in sorted(c.glob("trials/*"))
              if (t / "run" / "devices.csv").exists() and (t / "run" / "profiles.json").exists()]
    if not trials:
        raise SystemExit("no finished training trials (trials/*/run/devices.csv) in "
                         + ", ".join(map(str, a.campaigns)))
    df = pd.concat([replay(t) for t in trials], ignore_index=True)
    for col in ("eq45", "shared_run", "shared_now"):
        df[f"fid_{col}"] = df.measured_s / df[f"{col}_s"]
    pd.set_option("display.width", 220)
    pd.set_option("display.max_rows", 500)
    print(df.drop(columns=["trial"]).round(3).to_string(index=False))
    print(f"\n{len(df)} device-rounds in {len(trials)} trials, measured / predicted:")
    for col in ("eq45", "shared_run", "shared_now"):
        f = df[f"fid_{col}"]
        print(f"  {col:11s} {f.min():.2f}-{f.max():.2f}, median {f.median():.3f}, "
              f"within 0.9-1.1: {((f >= 0.9) & (f <= 1.1)).mean():.0%}, "
              f"mean |1 - x| {(f - 1).abs().mean():.3f}")


if __name__ == "__main__":
    main()
