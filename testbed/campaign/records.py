"""trials.csv: one row per finished trial, appended atomically (a crash never corrupts it, a
resumed campaign reads which trials are done)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.exists() and path.stat().st_size else pd.DataFrame()


def done_ids(path: Path) -> set[str]:
    df = read(path)
    return set(df.trial) if "trial" in df else set()


def append(path: Path, row: dict) -> None:
    """Write the old rows plus this one to a temporary file, then rename it over the old."""
    df = pd.concat([read(path), pd.DataFrame([row])], ignore_index=True)
    tmp = path.with_suffix(".csv.tmp")
    df.to_csv(tmp, index=False)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
