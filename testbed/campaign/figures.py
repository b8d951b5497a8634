"""A campaign's figures, ready for a paper: axis labels in words with units, a log axis for
1-2-5-10 sweeps and categories for words, one marker and line style per scheduler (readable in
grayscale), error bars that say what they are (95% confidence interval of the mean over the
repetitions), lines that lie on top of each other nudged apart, and PNG, PDF and SVG at the
size and DPI asked for. Partial and failed trials are left out, and the caption says how many."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from testbed.campaign import records
from testbed.errors import InputError

METRIC_LABELS = {
    "throughput_measured_items_s": "throughput, measured (items/s)",
    "throughput_predicted_items_s": "throughput, predicted (items/s)",
    "waiting_s": "waiting time before placement (s)",
    "latency_ms_p50": "latency, median (ms)",
    "latency_ms_min": "latency, fastest item (ms)",
    "fidelity": "measured / predicted",
    "makespan_measured_s": "makespan per period, measured (s)",
    "response_s_mean": "response time, mean (s)",
}
PARAM_LABELS = {  # a grid key's last part -> words and unit
    "bw_mean": "mean link bandwidth (Mbit/s)", "bw": "link bandwidth (Mbit/s)",
    "bw_var": "link bandwidth variation", "delay": "link delay (ms)", "loss": "loss (%)",
    "nodes": "nodes", "degree": "node degree", "duration": "trial duration (s)",
    "arrival_rate": "job arrival rate (jobs/s)", "rate_fps": "source rate (items/s)",
    "per_period": "requests per period", "cpu": "CPU (cores)", "repetition": "repetition",
}
MARKERS = "osD^vP*Xh<>"
STYLES = ("-", "--", "-.", ":")
FORMATS = ("png", "pdf", "svg")


@dataclass(frozen=True)
class FigureOptions:
    formats: tuple[str, ...] = ("png", "pdf")
    size: tuple[float, float] = (6.0, 4.0)  # inches
    dpi: int = 150
    confidence: float = 0.95


def param_label(column: str) -> str:
    key = column.removeprefix("param:")
    return PARAM_LABELS.get(key.rsplit(".", 1)[-1], key)


def metric_label(column: str) -> str:
    return METRIC_LABELS.get(column, column)


def interval(values: pd.Series, confidence: float) -> tuple[float, float, int]:
    """Mean and half-width of its confidence interval (Student's t); half-width 0 for n < 2."""
    from scipy import stats

    v = values.dropna()
    n = len(v)
    if n < 2:
        return (float(v.mean()) if n else float("nan"), 0.0, n)
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * v.std(ddof=1) / n ** 0.5
    return float(v.mean()), float(half), n


def _x_axis(values: list) -> tuple[str, dict]:
    """'log' for positive numbers spanning 10x or more, 'linear' for other numbers,
    'category' for anything else; with the position of each value."""
    nums = pd.to_numeric(pd.Series(values), errors="coerce")
    if nums.isna().any():
        return "category", {v: i for i, v in enumerate(values)}
    lo, hi = nums.min(), nums.max()
    scale = "log" if lo > 0 and hi / lo >= 10 else "linear"
    return scale, {v: float(n) for v, n in zip(values, nums, strict=True)}


def _nudge(scale: str, pos: float, i: int, k: int, span: float) -> float:
    """Spread k schedulers' points around `pos` so equal values stay visible."""
    off = (i - (k - 1) / 2) * 0.02
    if scale == "log":
        return pos * 10 ** off
    return pos + off * (span or 1) * (3 if scale == "category" else 1)


def _draw(trials: pd.DataFrame, x: str, series: list[tuple[str, str]], ylabel: str, title: str,
          opts: FigureOptions, caption: str, stem: Path) -> list[Path]:
    """series: (metric column, label suffix) drawn per scheduler with markers per scheduler
    and line styles per series."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    values = sorted(trials[x].dropna().unique(), key=lambda v: (str(type(v)), v))
    scale, where = _x_axis(values)
    positions = list(where.values())
    span = (max(positions) - min(positions)) if positions else 1
    fig, ax = plt.subplots(figsize=opts.size)
    groups = list(trials.groupby("scheduler"))
    count = 0
    for i, (sched, group) in enumerate(groups):
        for j, (metric, suffix) in enumerate(series):
            pts = []
            for v in values:
                mean, half, n = interval(group.loc[group[x] == v, metric], opts.confidence)
                if n:
                    pts.append((_nudge(scale, where[v], i, len(groups), span), mean, half))
                    count = max(count, n)
            if not pts:
                continue
            xs, ys, hs = zip(*pts, strict=True)
            style = STYLES[(j if len(series) > 1 else i) % len(STYLES)]
            ax.errorbar(xs, ys, yerr=hs, marker=MARKERS[i % len(MARKERS)], linestyle=style,
                        color=f"C{i}", capsize=3, markersize=6,
                        markerfacecolor="white" if j else f"C{i}",
                        label=f"{sched}{suffix}")
    if scale == "log":
        ax.set_xscale("log")
    if scale != "linear" or len(values) <= 10:  # ticks at the swept values themselves
        ax.xaxis.set_major_locator(FixedLocator(positions))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{v:g}" if isinstance(v, int | float) else str(v)
                            for v in values])
    ax.set_xlabel(param_label(x))
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    bars = (f"error bars: {opts.confidence:.0%} CI of the mean over n={count} repetitions"
            if count > 1 else "one repetition: no error bars")
    fig.text(0.01, 0.005, f"{bars}{'; ' + caption if caption else ''}", fontsize=7,
             color="0.3", va="bottom")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(fig, stem, opts)


def _save(fig, stem: Path, opts: FigureOptions) -> list[Path]:
    """The figure in every format asked for; closed afterwards."""
    import matplotlib.pyplot as plt

    paths = [stem.with_name(f"{stem.name}.{fmt}") for fmt in opts.formats]
    for path in paths:
        fig.savefig(path, dpi=opts.dpi)
    plt.close(fig)
    return paths


def plot(results: Path, opts: FigureOptions = FigureOptions()) -> list[Path]:
    """Every metric against every swept parameter; for emulated campaigns also measured
    beside predicted throughput in one figure. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    # TrueType fonts in PDFs (publishers refuse Type 3) and real text in SVGs (editable)
    matplotlib.rcParams.update({"pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none"})
    bad_formats = set(opts.formats) - set(FORMATS)
    if bad_formats:
        raise InputError(f"figure format {', '.join(sorted(bad_formats))}: choose from "
                         f"{', '.join(FORMATS)}")
    table = records.read(results / "trials.csv")
    if table.empty:
        raise InputError(f"{results}: no trials to plot")
    left_out = table[table.status != "done"].status.value_counts()
    trials = table[table.status == "done"]
    counts = ", ".join(f"{n} {s}" for s, n in left_out.items())
    if trials.empty:
        raise InputError(f"{results}: no trial finished ({counts}); see the reasons in "
                         "trials.csv")
    caption = f"left out: {counts} trial(s)" if counts else ""
    swept = [c for c in trials.columns if c.startswith("param:") and c != "param:scheduler"]
    out: list[Path] = []
    if {"makespan_measured_s", "makespan_predicted_s"} <= set(trials):
        out += _makespan_bars(results, trials, opts, caption)
    both = {"throughput_measured_items_s", "throughput_predicted_items_s"} <= set(trials)
    metrics = [m for m in ("throughput_predicted_items_s", "waiting_s", "latency_ms_p50",
                           "fidelity", "response_s_mean") if m in trials
               and not (both and m == "throughput_predicted_items_s")]
    for x in swept or ["repetition"]:
        name = x.removeprefix("param:").replace(".", "_")
        if both:  # the testbed's point: what the scheduler predicted beside what happened
            out += _draw(trials, x, [("throughput_measured_items_s", " measured"),
                                     ("throughput_predicted_items_s", " predicted")],
                         "throughput (items/s)",
                         f"{results.name}: measured (filled) vs predicted (open)", opts,
                         caption, results / f"throughput_measured_vs_predicted_vs_{name}")
        for metric in metrics:
            out += _draw(trials, x, [(metric, "")], metric_label(metric), results.name, opts,
                         caption, results / f"{metric}_vs_{name}")
    return out


def _makespan_bars(results: Path, trials: pd.DataFrame, opts: FigureOptions,
                   caption: str) -> list[Path]:
    """Requests campaigns: each policy's makespan per period, measured beside predicted,
    hatched for grayscale, with confidence intervals over repetitions."""
    import matplotlib.pyplot as plt

    rows = []
    for sched, g in trials.groupby("scheduler"):
        m, mh, n = interval(g.makespan_measured_s, opts.confidence)
        p, ph, _ = interval(g.makespan_predicted_s, opts.confidence)
        rows.append((sched, m, mh, p, ph, n))
    rows.sort(key=lambda r: r[1])
    fig, ax = plt.subplots(figsize=opts.size)
    xs = range(len(rows))
    for off, (col, half), label, hatch in ((-0.2, (1, 2), "measured", ""),
                                           (0.2, (3, 4), "predicted", "//")):
        ax.bar([i + off for i in xs], [r[col] for r in rows], width=0.4, label=label,
               yerr=[r[half] for r in rows], capsize=3, hatch=hatch,
               color="0.35" if not hatch else "white", edgecolor="black")
    ax.set_xticks(list(xs), [r[0] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("makespan per period (s)")
    ax.set_title(f"{results.name}: measured vs predicted", fontsize=10)
    ax.legend(fontsize=8)
    n = max((r[5] for r in rows), default=0)
    bars = (f"error bars: {opts.confidence:.0%} CI over n={n} trials" if n > 1
            else "one trial per policy: no error bars")
    fig.text(0.01, 0.005, f"{bars}{'; ' + caption if caption else ''}", fontsize=7,
             color="0.3", va="bottom")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(fig, results / "makespan_measured_vs_predicted", opts)


def plot_run(run: Path, opts: FigureOptions = FigureOptions()) -> list[Path]:
    """One run's throughput over time, one line per job (completions per second at its
    source), with every timeline change marked where it was applied."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta = json.loads((run / "run.json").read_text())
    if not (run / "items.csv").exists() or "epoch0_s" not in meta:
        raise InputError(f"{run}: no items.csv or run.json without epoch0_s (a streams run "
                         "made by this version is needed)")
    items = pd.read_csv(run / "items.csv")
    done = items[items.status == "done"]
    t = done.done_ns / 1e9 - meta["epoch0_s"]
    fig, ax = plt.subplots(figsize=opts.size)
    end = int(t.max()) + 1 if len(t) else 1
    for i, (job, sec) in enumerate(t.astype(int).groupby(done.job)):
        counts = sec.value_counts().reindex(range(end), fill_value=0).sort_index()
        ax.plot(counts.index, counts.values, marker=MARKERS[i % len(MARKERS)],
                linestyle=STYLES[i % len(STYLES)], markersize=4, label=job)
    changes = run / "timeline.csv"
    if changes.exists():
        tl = pd.read_csv(changes).dropna(subset=["planned_s"])
        for row in tl.itertuples():
            ax.axvline(row.applied_s, color="0.5", linestyle=":", linewidth=1)
            ax.text(row.applied_s, 1.0, f" {row.what} {row.target}", fontsize=6, va="top",
                    rotation=90, color="0.3", transform=ax.get_xaxis_transform())
    ax.set_xlabel("time since the run started (s)")
    ax.set_ylabel("throughput (items/s)")
    ax.set_title(f"{run.name}: {meta.get('scheduler', '')}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, run / "throughput_over_time", opts)
