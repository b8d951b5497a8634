"""Merge the trace files of a campaign's trials into one file per kind, each row tagged with its
trial, grid parameters and seed. The figures are drawn by figures.py."""

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
