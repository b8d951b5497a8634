"""DCEI figs. 5.7/5.8 from an emulated campaign (campaigns/dcei-fig5.7.yaml): the mean frame
rate per stream in every 5-s bin, measured beside predicted, per strategy, with the cameras'
pedestrians in the bin. Streams a strategy could not place count as 0 fps, as in the thesis's
mean throughput. Written to docs/results.md.

Usage: python bench/dcei_over_time.py results/dcei-fig5.7
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import table, write_section  # noqa: E402

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results.md"
ORDER = ("nmno", "wmno", "nmwo", "jstsh")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results", type=Path)
    a = ap.parse_args()
    trials = pd.read_csv(a.results / "trials.csv", dtype={"trial": str})
    per: dict[str, pd.DataFrame] = {}
    people = None
    for t in trials[trials.status != "failed"].itertuples():
        over = pd.read_csv(a.results / "trials" / t.trial / "run" / "fps_over_time.csv")
        streams = int(t.streams)
        per[t.scheduler] = over.groupby("t_s")[["fps_measured", "fps_predicted"]].sum() / streams
        if people is None or len(over.job.unique()) == streams:
            people = over.groupby("t_s").pedestrians.sum()
    names = [s for s in ORDER if s in per]
    rows = []
    for t_s in people.index:
        cells = [f"{t_s:g}-{t_s + 5:g}", int(people[t_s])]
        for s in names:
            m, p = per[s].loc[t_s] if t_s in per[s].index else (float("nan"),) * 2
            cells.append(f"{m:.2f} / {p:.2f}")
        rows.append(cells)
    mean = ["mean 5-60 s", ""] + [
        f"{per[s].fps_measured.iloc[1:].mean():.2f} / {per[s].fps_predicted.iloc[1:].mean():.2f}"
        for s in names]
    swing = ["max - min 5-60 s", ""] + [
        f"{per[s].fps_measured.iloc[1:].max() - per[s].fps_measured.iloc[1:].min():.2f} / "
        f"{per[s].fps_predicted.iloc[1:].max() - per[s].fps_predicted.iloc[1:].min():.2f}"
        for s in names]
    body = (f"Mean frame rate per stream in each 5-s bin, measured / predicted ({len(trials)} "
            "trials, one per strategy; unplaced streams count as 0 fps). 'pedestrians': the "
            "four cameras' counts at the bin's start, summed. The first bin holds the models' "
            "warm-up, which the prediction leaves out. Thesis figs. 5.7/5.8: the offloading "
            "methods (NMWO, JSTSH) stay steady while NMNO and WMNO drop as the counts rise.\n\n"
            + table(["t s", "pedestrians", *(f"{s} fps" for s in names)], [*rows, mean, swing]))
    write_section(f"campaign-{a.results.name}-over-time",
                  f"DCEI figs. 5.7/5.8: frame rate over time ({a.results.name})", body,
                  doc=RESULTS)


if __name__ == "__main__":
    main()
