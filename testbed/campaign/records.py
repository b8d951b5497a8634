"""trials.csv: one row per finished trial, appended as one fsynced line (a crash never
corrupts it; a resumed campaign reads which trials are done). Trial ids are always read as
strings: an id made only of digits must not turn into a number and be re-run forever."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import pandas as pd


def read(path: Path) -> pd.DataFrame:
    if not (path.exists() and path.stat().st_size):
        return pd.DataFrame()
    return pd.read_csv(path, dtype={"trial": str}, keep_default_na=True)


def done_ids(path: Path) -> set[str]:
    df = read(path)
    return set(df.trial.astype(str)) if "trial" in df else set()


def failed_ids(path: Path) -> set[str]:
    df = read(path)
    return set(df[df.status == "failed"].trial.astype(str)) if "status" in df else set()


def set_aside_failed(path: Path) -> int:
    """Move the rows of failed trials to failed_attempts.csv beside trials.csv (kept, never
    lost: the reasons say why they failed), so that a resume runs those trials again.
    Returns how many were moved."""
    df = read(path)
    if df.empty or "status" not in df:
        return 0
    failed = df[df.status == "failed"]
    if failed.empty:
        return 0
    attempts = path.with_name("failed_attempts.csv")
    failed.to_csv(attempts, mode="a", index=False, header=not attempts.exists())
    tmp = path.with_suffix(".csv.tmp")
    df[df.status != "failed"].to_csv(tmp, index=False)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return len(failed)


def header(path: Path) -> list[str]:
    if not (path.exists() and path.stat().st_size):
        return []
    with open(path, newline="") as f:
        return next(csv.reader(f), [])


def _cell(v: object) -> object:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else v


def append(path: Path, row: dict, columns: list[str]) -> None:
    """Append one row in the file's column order (writing the header first if the file is
    new). A file whose header lacks some of `columns` (an older campaign layout) is rewritten
    once with the union of columns; every later append is a single line."""
    have = header(path)
    missing = [c for c in columns if c not in have] + [c for c in row if c not in columns
                                                       and c not in have]
    if have and missing:
        old = read(path)
        for c in missing:
            old[c] = float("nan")
        tmp = path.with_suffix(".csv.tmp")
        old.to_csv(tmp, index=False)
        os.replace(tmp, path)
        have = list(old.columns)
    cols = have or columns + [c for c in row if c not in columns]
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, restval="")
        if not have:
            w.writeheader()
        w.writerow({k: _cell(row.get(k)) for k in cols})
        f.flush()
        os.fsync(f.fileno())
