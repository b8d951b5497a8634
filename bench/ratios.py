"""How the replay benches print measured / predicted ratios: one line per way of predicting,
and the same again per group when a campaign ran with and without the speed hold."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd


def line(f: pd.Series) -> str:
    """Range, median, share within the issues' 0.9-1.1, and mean distance from 1."""
    return (f"{f.min():.2f}-{f.max():.2f}, median {f.median():.3f}, "
            f"within 0.9-1.1: {f.between(0.9, 1.1).mean():.0%}, "
            f"mean |1 - x| {(f - 1).abs().mean():.3f}")


def by_hold(df: pd.DataFrame, unit: str, summarise: Callable[[pd.DataFrame], None]) -> None:
    """`summarise` for the held and the unheld trials apart, if the frame has both."""
    if df.held.nunique() < 2:
        return
    for held, part in df.groupby("held"):
        print(f"\n{'held' if held else 'not held'} (hold_speed: {str(held).lower()}): "
              f"{len(part)} {unit} in {part.trial.nunique()} trials")
        summarise(part)
