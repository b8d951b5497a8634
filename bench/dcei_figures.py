"""DCEI figs. 5.5 and 5.9 from emulated campaigns (campaigns/dcei-fig5.5.yaml, -fig5.9.yaml):
mean frame rate per stream, measured beside predicted, per strategy, against the number of
devices (fig. 5.5) or the links' mean bandwidth (fig. 5.9), with the per-stream fidelity
range; a table in docs/results.md and a plot in docs/img/<campaign>.png. Streams a strategy
could not place count as 0 fps.

Usage: python bench/dcei_figures.py results/dcei-fig5.5 [--note TEXT]
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import figure, save_figure, table, write_section  # noqa: E402

DOCS = Path(__file__).resolve().parent.parent / "docs"
ORDER = ("nmno", "wmno", "nmwo", "jstsh")
THESIS = {
    "devices": "Thesis fig. 5.5: JSTSH (WMWO) 14-36% more throughput than the baselines; "
               "NMNO flat once devices outnumber streams.",
    "bandwidth": "Thesis fig. 5.9: offloading methods (NMWO, JSTSH) match the others at "
                 "5-10 Mbit/s and are clearly better at 30.",
}


def mean_bw(links: str) -> float:
    """The grid's links (as the campaign recorded them) -> their mean rate, Mbit/s."""
    values = [lk["bw"] for lk in ast.literal_eval(links)]
    return sum(values) / len(values)


def axis(t: pd.DataFrame) -> tuple[str, str, pd.Series]:
    """What the campaign varied: (key, axis label, value per trial)."""
    if "param:jobs.devices" in t:
        return "devices", "edge devices", t["param:jobs.devices"].map(
            lambda d: len(ast.literal_eval(d)))
    return "bandwidth", "mean link bandwidth, Mbit/s", t["param:topology.links"].map(
        mean_bw).round(0)


def plot(t: pd.DataFrame, label: str, title: str, dest: Path) -> None:
    fig, ax = figure((6.4, 3.8))
    for i, s in enumerate(ORDER):
        g = t[t.scheduler == s].sort_values("x")
        if g.empty:
            continue
        color = f"C{i}"
        ax.plot(g.x, g.fps_measured, "o-", color=color, label=f"{s} measured")
        ax.plot(g.x, g.fps_predicted, "x--", color=color, alpha=0.7, label=f"{s} predicted")
    ax.set_xlabel(label)
    ax.set_ylabel("frames/s per stream")
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    save_figure(fig, ax, dest, dpi=100, fontsize=7, ncol=2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results", type=Path)
    ap.add_argument("--note", default="")
    a = ap.parse_args()
    t = pd.read_csv(a.results / "trials.csv", dtype={"trial": str})
    t = t[t.status == "done"].copy()
    key, label, t["x"] = axis(t)
    rows = []
    for x, g in t.groupby("x"):
        by = g.set_index("scheduler")
        cells = [f"{x:g}"]
        for s in ORDER:
            if s not in by.index:
                cells.append("-")
                continue
            r = by.loc[s]
            cells.append(f"{r.fps_measured:.2f} / {r.fps_predicted:.2f} "
                         f"({r.fidelity_min:.2f}-{r.fidelity_max:.2f}, "
                         f"{int(r.streams_placed)}/{int(r.streams)})")
        rows.append(cells)
    name = a.results.name
    image = DOCS / "img" / f"{name}.png"
    plot(t, label, f"{name}: measured (solid) and predicted (dashed)", image)
    body = (f"Mean frame rate per stream, measured / predicted, by {label}; in brackets the "
            "per-stream measured/predicted range and the streams placed "
            f"({len(t)} trials, one per cell). {THESIS[key]}\n\n"
            + table([label, *(f"{s} fps" for s in ORDER)], rows)
            + f"\n\n![{name}](img/{image.name})"
            + (f"\n\n{a.note}" if a.note else ""))
    write_section(f"campaign-{name}-{key}", f"DCEI {name[5:]}: frame rate by {label} ({name})",
                  body, doc=DOCS / "results.md")


if __name__ == "__main__":
    main()
