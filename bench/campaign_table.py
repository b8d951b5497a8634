"""Write a finished campaign's summary (per scheduler and swept value: mean throughput
measured and predicted, waiting) into docs/results.md.

Usage: python bench/campaign_table.py results/<campaign> [--note TEXT]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import table, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    results = Path(args.results)
    df = pd.read_csv(results / "trials.csv")
    if "param:jobs.devices" in df:  # video: the devices list, shown as its length
        df["param:devices"] = df.pop("param:jobs.devices").map(lambda v: v.count(",") + 1)
    if "param:topology.links" in df:  # a list of links per value: its mean bandwidth
        df["param:mean link Mbit/s"] = df.pop("param:topology.links").map(_mean_bw)
    swept = [c for c in df.columns if c.startswith("param:") and c != "param:scheduler"]
    metrics = [m for m in ("throughput_measured_items_s", "throughput_predicted_items_s",
                           "makespan_measured_s", "makespan_predicted_s", "fidelity",
                           "fidelity_min", "fidelity_max", "response_s_mean",
                           "response_s_predicted_mean", "decision_ms", "waiting_s",
                           "round_time_measured_s", "round_time_predicted_s",
                           "round_time_predicted_shared_s", "fidelity_shared", "accuracy_final",
                           "server_peak_mem_mb", "server_active_peak_mb", "fps_measured",
                           "fps_predicted",
                           "latency_ms_p50", "latency_ms_predicted", "streams_placed")
               if m in df]
    done = df[df.status == "done"]
    summary = done.groupby(["scheduler", *swept])[metrics].mean().reset_index()
    rows = [[r["scheduler"], *(r[c] for c in swept), *(f"{r[m]:.3f}" for m in metrics)]
            for _, r in summary.iterrows()]
    if "cuts" in done:  # training: the blocks each device trained (first repetition)
        cuts = done.groupby(["scheduler", *swept])["cuts"].first().reset_index()
        for row, (_, r) in zip(rows, cuts.iterrows(), strict=True):
            row.append(str(r["cuts"]))
        metrics = [*metrics, "cuts"]
    failed = df[df.status != "done"]
    body = table(["scheduler", *(c.removeprefix("param:") for c in swept), *metrics], rows)
    body += (f"\n\n{len(df)} trials, {len(failed)} failed"
             + (": " + "; ".join(f"{r.trial} {r.reason}" for r in failed.itertuples())
                if len(failed) else "")
             + f". Mode: {df['mode'].iloc[0]}; repetitions averaged. {args.note}")
    if "fps_measured" in done and len(swept) == 1:  # video: the thesis's figure as a table
        body += "\n\n" + _figure(done, swept[0])
    write_section(f"campaign-{results.name}", f"Campaign {results.name}", body,
                  ROOT / "docs" / "results.md")


def _mean_bw(links: str) -> float:
    import ast

    values = [lk["bw"] for lk in ast.literal_eval(links)]
    return round(sum(values) / len(values), 1)


def _figure(done: pd.DataFrame, swept: str) -> str:
    """Measured mean frame rate per strategy (columns) and swept value (rows), and JSTSH's
    gain over the best and the worst baseline."""
    pivot = done.pivot_table(index=swept, columns="scheduler", values="fps_measured")
    order = [s for s in ("nmno", "wmno", "nmwo", "jstsh") if s in pivot]
    rows = []
    for value, r in pivot.iterrows():
        base = [r[s] for s in order if s != "jstsh"]
        gain = (f"{(r['jstsh'] / max(base) - 1) * 100:+.0f}% / "
                f"{(r['jstsh'] / min(base) - 1) * 100:+.0f}%") if "jstsh" in r and base else ""
        rows.append([value, *(f"{r[s]:.2f}" for s in order), gain])
    return table([swept.removeprefix("param:"), *(f"{s} fps" for s in order),
                  "JSTSH vs best / worst baseline"], rows)


if __name__ == "__main__":
    main()
