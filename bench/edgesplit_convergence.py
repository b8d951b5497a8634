"""EdgeSplit's fig. 4.8 from an emulated campaign (campaigns/edgesplit-fig4.8.yaml): each
strategy's test accuracy after every round against the training time so far, measured, and
how far split training's accuracy strays from FedAvg's (vanilla FL) round by round. The table
goes to docs/results.md, the plot to docs/img/edgesplit-fig4.8.png.

Usage: python bench/edgesplit_convergence.py results/edgesplit-fig4.8
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import campaign_args, figure, save_figure, table, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results.md"
ORDER = ("vanilla-fl", "adaptive-fl", "edgesplit-fix", "edgesplit")
REACH = 0.9  # "converged": within 10% of vanilla FL's final accuracy


def load(results: Path) -> dict[str, pd.DataFrame]:
    trials = pd.read_csv(results / "trials.csv", dtype={"trial": str})
    out = {}
    for t in trials[trials.status != "failed"].itertuples():
        rounds = pd.read_csv(results / "trials" / t.trial / "run" / "rounds.csv")
        # training time: the rounds themselves (each round's wall time, aggregation included)
        rounds["train_s"] = (rounds.round_time_measured_s + rounds.aggregate_s).cumsum()
        out[t.scheduler] = rounds
    return out


def plot(per: dict[str, pd.DataFrame], path: Path) -> None:
    fig, ax = figure((6.5, 3.8))
    for s, r in per.items():
        ax.plot(r.train_s, r.accuracy, marker=".", label=s)
    ax.set_xlabel("training time, s (sum of measured rounds)")
    ax.set_ylabel("test accuracy, %")
    ax.set_title("LeNet on digits, 4 emulated devices (thesis fig. 4.8)")
    save_figure(fig, ax, path)


def main() -> None:
    a = campaign_args()
    per = {s: r for s in ORDER for k, r in load(a.results).items() if k == s}
    if "vanilla-fl" not in per:
        raise SystemExit(f"{a.results}: no vanilla-fl trial to compare with")
    base = per["vanilla-fl"].set_index("round").accuracy
    target = REACH * base.iloc[-1]
    rows = []
    for s, r in per.items():
        acc = r.set_index("round").accuracy
        common = acc.index.intersection(base.index)
        gap = (acc[common] - base[common]).abs()
        reached = r[r.accuracy >= target]
        rows.append([s, len(r), f"{r.round_time_measured_s.mean():.2f}",
                     f"{r.round_time_predicted_s.iloc[0]:.2f}", f"{r.train_s.iloc[-1]:.1f}",
                     f"{acc.iloc[-1]:.1f}", f"{acc.max():.1f}", f"{gap.median():.2f}",
                     f"{gap.max():.2f} (round {int(gap.idxmax())})",
                     f"{int((gap <= 2).sum())} of {len(gap)}",
                     f"{reached.train_s.iloc[0]:.1f} (round {int(reached['round'].iloc[0])})"
                     if len(reached) else "not reached"])
    img = ROOT / "docs" / "img" / f"{a.results.name}.png"
    plot(per, img)
    body = ("Test accuracy of the averaged model after every round against the training time "
            "so far (the rounds' measured times, aggregation included), one trial per "
            "strategy. 'gap': the difference in accuracy from vanilla FL (FedAvg) after the "
            "same round, in points (its median and maximum over the rounds, and in how many "
            f"rounds it is at most 2 points). 'reaches {REACH:.0%}': the training time at "
            f"which the accuracy first reaches {REACH:.0%} of vanilla FL's final "
            f"({target:.1f}%). The thesis (fig. 4.8): EdgeSplit converges fastest, with no "
            "loss of accuracy.\n\n"
            + table(["strategy", "rounds", "round s measured", "round s predicted",
                     "training s", "final accuracy %", "best accuracy %", "median gap",
                     "max gap", "rounds within 2 points",
                     f"reaches {REACH:.0%}"], rows)
            + f"\n\n![accuracy over training time](img/{img.name})\n\n{a.note}\n")
    write_section(f"campaign-{a.results.name}-convergence",
                  f"EdgeSplit fig. 4.8: accuracy over training time ({a.results.name})", body,
                  doc=RESULTS)


if __name__ == "__main__":
    main()
