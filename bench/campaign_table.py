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
    swept = [c for c in df.columns if c.startswith("param:") and c != "param:scheduler"]
    metrics = [m for m in ("throughput_measured_items_s", "throughput_predicted_items_s",
                           "makespan_measured_s", "makespan_predicted_s", "fidelity",
                           "fidelity_min", "fidelity_max", "response_s_mean",
                           "response_s_predicted_mean", "decision_ms", "waiting_s",
                           "round_time_measured_s", "round_time_predicted_s", "accuracy_final",
                           "server_peak_mem_mb") if m in df]
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
    write_section(f"campaign-{results.name}", f"Campaign {results.name}", body,
                  ROOT / "docs" / "results.md")


if __name__ == "__main__":
    main()
