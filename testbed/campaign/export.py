"""Merge the trace files of a campaign's trials into one file per kind, each row tagged with its
trial, grid parameters and seed; and draw the standard figures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from testbed.campaign import records
from testbed.errors import InputError

TRACE_KINDS = ("jobs", "items", "hops", "tasks", "events", "flows", "links", "nodes",
               "devices", "node_speeds", "requests", "periods", "service_profile")


def _run_metadata(path: Path) -> pd.DataFrame:
    """run.json as one row: its scalar fields, the incident count and text, versions."""
    import json

    meta = json.loads(path.read_text())
    row = {k: v for k, v in meta.items() if isinstance(v, str | int | float | bool) or v is None}
    row["incidents"] = len(meta.get("incidents", []))
    row["incident_text"] = "; ".join(f"{i['what']}: {i['action']}"
                                     for i in meta.get("incidents", []))
    for k, v in meta.get("versions", {}).items():
        row[f"version:{k}"] = v
    return pd.DataFrame([row])


def export(results: Path, fmt: str = "csv") -> list[Path]:
    if fmt not in ("csv", "parquet"):
        raise InputError(f"--format {fmt!r}: use csv or parquet")
    trials = records.read(results / "trials.csv")
    if trials.empty:
        raise InputError(f"{results}: no trials.csv with trials; run `testbed campaign` first")
    trials["trial"] = trials.trial.astype(str)
    tags = trials.set_index("trial")[[c for c in trials.columns if c.startswith("param:")]
                                     + ["scheduler", "repetition", "seed"]]
    out_dir = results / "export"
    out_dir.mkdir(exist_ok=True)
    written = []
    for kind in ("trials", *TRACE_KINDS, "runs"):
        if kind == "trials":
            merged = trials
        else:
            frames = []
            for trial in tags.index:
                name = "run.json" if kind == "runs" else f"{kind}.csv"
                path = results / "trials" / trial / "run" / name
                if path.exists() and path.stat().st_size:
                    df = _run_metadata(path) if kind == "runs" else pd.read_csv(path)
                    for col, value in tags.loc[trial].items():
                        df[col] = value
                    df.insert(0, "trial", trial)
                    frames.append(df)
            if not frames:
                continue
            merged = pd.concat(frames, ignore_index=True)
        target = out_dir / f"{kind}.{fmt}"
        if fmt == "csv":
            merged.to_csv(target, index=False)
        else:
            merged.to_parquet(target, index=False)
        written.append(target)
    return written


def plot(results: Path) -> list[Path]:
    """Metric vs each swept parameter, one line per scheduler, error bars over repetitions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = records.read(results / "trials.csv")
    if trials.empty:
        raise InputError(f"{results}: no trials to plot")
    trials = trials[trials.status == "done"]
    swept = [c for c in trials.columns if c.startswith("param:") and c != "param:scheduler"]
    metrics = [m for m in ("throughput_measured_items_s", "throughput_predicted_items_s",
                           "waiting_s", "latency_ms_p50", "fidelity") if m in trials]
    out = []
    if {"makespan_measured_s", "makespan_predicted_s"} <= set(trials):
        out.append(_makespan_bars(results, trials))
    both = {"throughput_measured_items_s", "throughput_predicted_items_s"} <= set(trials)
    for x in swept or ["repetition"]:
        if both:  # the testbed's point: what the scheduler predicted beside what happened
            fig, ax = plt.subplots(figsize=(6, 4))
            for i, (sched, group) in enumerate(trials.groupby("scheduler")):
                color = f"C{i}"
                for metric, style in (("throughput_measured_items_s", "-"),
                                      ("throughput_predicted_items_s", "--")):
                    stats = group.groupby(x)[metric].agg(["mean", "std"]).reset_index()
                    ax.errorbar(stats[x], stats["mean"], yerr=stats["std"].fillna(0),
                                fmt="o" + style, color=color, capsize=3,
                                label=f"{sched} {metric.split('_')[1]}")
            ax.set_xlabel(x.removeprefix("param:"))
            ax.set_ylabel("throughput (items/s)")
            ax.set_title(f"{results.name}: measured (solid) vs predicted (dashed)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            fig.tight_layout()
            path = results / f"throughput_measured_vs_predicted_vs_{_label(x)}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            out.append(path)
        for metric in metrics:
            fig, ax = plt.subplots(figsize=(6, 4))
            for sched, group in trials.groupby("scheduler"):
                stats = group.groupby(x)[metric].agg(["mean", "std"]).reset_index()
                ax.errorbar(stats[x], stats["mean"], yerr=stats["std"].fillna(0), marker="o",
                            capsize=3, label=sched)
            ax.set_xlabel(x.removeprefix("param:"))
            ax.set_ylabel(metric)
            ax.set_title(f"{results.name}: {metric}")
            ax.grid(alpha=0.3)
            ax.legend()
            fig.tight_layout()
            path = results / f"{metric}_vs_{_label(x)}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            out.append(path)
    return out


def _makespan_bars(results: Path, trials: pd.DataFrame) -> Path:
    """Requests campaigns: each policy's mean makespan per period, measured beside
    predicted, error bars over repetitions."""
    import matplotlib.pyplot as plt

    stats = trials.groupby("scheduler")[["makespan_measured_s", "makespan_predicted_s"]] \
        .agg(["mean", "std"]).sort_values(("makespan_measured_s", "mean"))
    fig, ax = plt.subplots(figsize=(7, 4))
    x = range(len(stats))
    for off, metric, label in ((-0.2, "makespan_measured_s", "measured"),
                               (0.2, "makespan_predicted_s", "predicted")):
        ax.bar([i + off for i in x], stats[(metric, "mean")], width=0.4, label=label,
               yerr=stats[(metric, "std")].fillna(0), capsize=3)
    ax.set_xticks(list(x), stats.index, rotation=30, ha="right")
    ax.set_ylabel("makespan per period (s)")
    ax.set_title(f"{results.name}: measured vs predicted")
    ax.legend()
    fig.tight_layout()
    path = results / "makespan_measured_vs_predicted.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _label(column: str) -> str:
    return column.removeprefix("param:").replace(".", "_")
