"""OTFA vs TP when links degrade mid-run: per trial, each job's throughput before, during and
after the timeline's degradation (completions per second in each window, from items.csv on
the run's clock), and throughput over time with the timeline's changes marked. Writes the table
to docs/results.md and the figure to docs/img/.

Usage: python bench/degradation.py [--run] [--results results/link-degradation]
  --run  first runs campaigns/link-degradation.yaml (emulated, about 4 minutes)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.report import table, write_section  # noqa: E402


def windows(timeline: pd.DataFrame, end_s: float) -> list[tuple[str, float, float]]:
    """before / during / after the first change and the revert that ends it."""
    changes = timeline[timeline.what.isin(["set", "down", "stop"])].planned_s
    reverts = timeline[timeline.what.isin(["revert", "up", "start"])].planned_s
    start, stop = float(changes.min()), float(reverts.max())
    return [("before", 1.0, start), ("degraded", start + 1.0, stop), ("after", stop + 1.0,
                                                                      end_s)]


def per_second(items: pd.DataFrame, epoch0_s: float) -> pd.DataFrame:
    done = items[items.status == "done"].copy()
    done["t_s"] = done.done_ns / 1e9 - epoch0_s
    return done


def analyse(results: Path) -> tuple[list[list], dict]:
    rows, series = [], {}
    trials = pd.read_csv(results / "trials.csv", dtype={"trial": str})
    for tr in trials.itertuples():
        run = results / "trials" / tr.trial / "run"
        if not (run / "timeline.csv").exists():
            continue
        meta = json.loads((run / "run.json").read_text())
        timeline = pd.read_csv(run / "timeline.csv")
        done = per_second(pd.read_csv(run / "items.csv"), meta["epoch0_s"])
        end = float(done.t_s.max())
        rates = {}
        for label, a, b in windows(timeline, end):
            n = done[(done.t_s >= a) & (done.t_s < b)].groupby("job").size().reindex(
                sorted(done.job.unique()), fill_value=0)  # a job with none counts as 0
            rates[label] = (n / (b - a)).mean() if len(n) and b > a else float("nan")
        late = timeline.late_ms.dropna()
        rows.append([tr.scheduler, tr.repetition, f"{rates['before']:.2f}",
                     f"{rates['degraded']:.2f}", f"{rates['after']:.2f}",
                     f"{rates['degraded'] / rates['before']:.2f}", tr.status,
                     f"{late.max():.1f}"])
        counts = (done.assign(sec=done.t_s.astype(int)).groupby(["sec", "job"]).size()
                  .unstack(fill_value=0))  # seconds without a completion count as 0
        counts = counts.reindex(range(int(end) + 1), fill_value=0)
        series.setdefault(tr.scheduler, []).append((counts.mean(axis=1), timeline))
    return rows, series


def figure(series: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for i, (sched, runs) in enumerate(sorted(series.items())):
        per = pd.concat([s for s, _ in runs], axis=1).fillna(0).mean(axis=1).sort_index()
        ax.plot(per.index, per.values, marker="os"[i % 2], linestyle=["-", "--"][i % 2],
                label=f"{sched} (mean of {len(runs)} runs)")
    timeline = next(iter(series.values()))[0][1]
    for t, what in zip(timeline.planned_s, timeline.what, strict=True):
        if t == t:  # the final restore has no planned time
            ax.axvline(t, color="0.5", linestyle=":", linewidth=1)
            ax.text(t, ax.get_ylim()[1], f" {what}", fontsize=7, va="top", color="0.3")
    ax.set_xlabel("time since the run started (s)")
    ax.set_ylabel("throughput per job (items/s)")
    ax.set_title("two of e1's links 8 -> 1 Mbit/s at 5 s, back at 13 s", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", action="store_true")
    ap.add_argument("--campaign", default="link-degradation",
                    help="campaigns/NAME.yaml (link-degradation or link-degradation-k6)")
    args = ap.parse_args()
    results = ROOT / "results" / args.campaign
    source = ROOT / "campaigns" / f"{args.campaign}.yaml"
    if args.run:
        from testbed.campaign.run import run_campaign

        run_campaign(source, root=results.parent, resume=(results / "trials.csv").exists())
    import yaml

    k = yaml.safe_load(source.read_text()).get("k_paths", 3)
    rows, series = analyse(results)
    img = ROOT / "docs" / "img" / f"{args.campaign.replace('-', '_')}.png"
    figure(series, img)
    body = table(["scheduler", "repetition", "before items/s", "degraded items/s",
                  "after items/s", "degraded / before", "trial status",
                  "latest change ms"], rows)
    body += ("\n\nThroughput per job (completions at the source per second, mean of the two "
             "jobs) in each window: before the first change, while two of e1's three links "
             "run at 1 instead of 8 Mbit/s, after they recover (1 s after each change left "
             f"out). {k} candidate paths per flow. `latest change ms`: the largest lateness "
             f"of a timeline action against its planned time. Figure: `{img.relative_to(ROOT)}` "
             "(dotted lines: the timeline's changes).\n\n")
    if k == 3:
        body += ("What it shows: both schedulers re-plan at each change "
                 "(OTFA's Plans move the flows' paths and rates; TP re-shares the same shortest "
                 "paths), and OTFA keeps 1.5-2x TP's throughput while degraded, but neither "
                 "escapes to the undegraded route e1-e4-e6-e5: with 3 candidate paths per flow "
                 "(the default `k_paths`), that 3-hop route is not among OTFA's candidates (ties "
                 "with e1-e2-e3-e5), so both fall to about 1 Mbit/s worth of frames. The issue's "
                 "'OTFA recovers where TP does not' is therefore not shown at this setting "
                 "(see the k_paths 6 run below).")
    body += f"\n\n![throughput over time](img/{img.name})"
    write_section(args.campaign, f"Link degradation mid-run: OTFA vs TP, {k} candidate "
                  "paths (#17)", body, ROOT / "docs" / "results.md")


if __name__ == "__main__":
    main()
