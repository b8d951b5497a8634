"""EdgeSplit's fig. 4.10 from an emulated campaign (campaigns/edgesplit-fig4.10.yaml): for each
total bandwidth B, EdgeSplit's speed-up over vanilla FL (vanilla's round time over EdgeSplit's),
measured and predicted by eq. 4.5, beside the thesis's curve. The table goes to
docs/results.md, the plot to docs/img/edgesplit-fig4.10.png.

Usage: python bench/edgesplit_bandwidth.py results/edgesplit-fig4.10 [--note TEXT]
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import campaign_args, figure, save_figure, table, write_section  # noqa: E402
from testbed.units import parse_rate_mbit  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results.md"
THESIS = {5: 1.3, 50: 3.1}  # fig. 4.10, VGG-16, 20 devices: the curve's two ends
KEY = "param:jobs.total_bandwidth"


def speedups(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per B: both strategies' round times (steady round), the ratios, the cuts."""
    done = trials[trials.status == "done"].copy()
    done["B"] = done[KEY].map(parse_rate_mbit)
    rows = []
    for b, g in done.groupby("B"):
        by = g.set_index("scheduler")
        if not {"vanilla-fl", "edgesplit"} <= set(by.index):
            continue
        v, e = by.loc["vanilla-fl"], by.loc["edgesplit"]
        rows.append({"B": b, "vanilla_s": v.round_time_measured_s,
                     "edgesplit_s": e.round_time_measured_s,
                     "measured": v.round_time_measured_s / e.round_time_measured_s,
                     "predicted": v.round_time_predicted_s / e.round_time_predicted_s,
                     "fidelity_vanilla": v.fidelity, "fidelity_edgesplit": e.fidelity,
                     "fidelity_edgesplit_shared": e.fidelity_shared, "cuts": e.cuts})
    return pd.DataFrame(rows).sort_values("B")


def plot(df: pd.DataFrame, path: Path) -> None:
    fig, ax = figure((6.0, 3.6))
    ax.plot(df.B, df.measured, marker="o", label="measured (emulated, 4 devices)")
    ax.plot(df.B, df.predicted, marker="s", linestyle="--", label="predicted (eq. 4.5)")
    ax.plot(list(THESIS), list(THESIS.values()), marker="^", linestyle=":", color="gray",
            label="thesis fig. 4.10 (20 devices)")
    ax.set_xlabel("total bandwidth B, Mbit/s")
    ax.set_ylabel("EdgeSplit over vanilla FL, x")
    ax.set_ylim(bottom=0)
    save_figure(fig, ax, path)


def main() -> None:
    a = campaign_args()
    trials = pd.read_csv(a.results / "trials.csv", dtype={"trial": str})
    if KEY not in trials:
        raise SystemExit(f"{a.results}: the campaign does not sweep jobs.total_bandwidth")
    df = speedups(trials)
    if df.empty:
        raise SystemExit(f"{a.results}: no bandwidth with both vanilla-fl and edgesplit done")
    img = ROOT / "docs" / "img" / f"{a.results.name}.png"
    plot(df, img)
    rows = [[f"{r.B:g}", f"{r.vanilla_s:.2f}", f"{r.edgesplit_s:.2f}", f"{r.measured:.2f}x",
             f"{r.predicted:.2f}x", f"{THESIS[r.B]:.1f}x" if r.B in THESIS else "",
             f"{r.fidelity_vanilla:.2f}", f"{r.fidelity_edgesplit:.2f} "
             f"({r.fidelity_edgesplit_shared:.2f})", r.cuts] for r in df.itertuples()]
    body = ("Round time of the steady round (measured) for vanilla FL and EdgeSplit at each "
            "total bandwidth B, EdgeSplit's speed-up (vanilla's round over EdgeSplit's), "
            "measured and as eq. 4.5 predicts it, and fidelity (measured / predicted round; "
            "in brackets against the shared-server prediction). The thesis's values are its "
            "figure's two ends.\n\n"
            + table(["B Mbit/s", "vanilla FL s", "EdgeSplit s", "speed-up measured",
                     "speed-up predicted", "thesis", "fidelity vanilla",
                     "fidelity EdgeSplit", "EdgeSplit cuts"], rows)
            + f"\n\n![speed-up over bandwidth](img/{img.name})\n\n{a.note}\n")
    write_section(f"campaign-{a.results.name}-bandwidth",
                  f"EdgeSplit fig. 4.10: speed-up over total bandwidth ({a.results.name})",
                  body, doc=RESULTS)


if __name__ == "__main__":
    main()
