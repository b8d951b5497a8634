"""Drive a campaign: expand it, skip trials already recorded (--resume), run the rest
(simulated ones in parallel with --jobs N, emulated ones one at a time), append each row as soon
as its trial ends. The resolved campaign is saved beside the results."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

from testbed.campaign import records
from testbed.campaign.sweep import Campaign, Trial, load_campaign
from testbed.campaign.trials import run_trial
from testbed.errors import InputError

Progress = Callable[[int, int, Trial, dict | None], None]


def results_dir(campaign: Campaign, root: Path = Path("results")) -> Path:
    return root / campaign.spec.name


def run_campaign(path: str | Path, resume: bool = False, jobs: int = 1, dry_run: bool = False,
                 root: Path = Path("results"),
                 progress: Progress = lambda done, total, trial, row: None) -> list[Trial]:
    """Runs the campaign's pending trials; returns them (with --dry-run: only lists them)."""
    campaign = load_campaign(path)
    out = results_dir(campaign, root)
    table = out / "trials.csv"
    done = records.done_ids(table)
    if done and not resume and not dry_run:
        raise InputError(f"{table} already has {len(done)} trials; pass --resume to continue "
                         "the campaign, or move that directory away to start over")
    pending = [t for t in campaign.trials if t.id not in done]
    if dry_run:
        return pending
    out.mkdir(parents=True, exist_ok=True)
    (out / "campaign.json").write_text(json.dumps({
        "spec": campaign.spec.model_dump(), "source": str(campaign.source),
        "trials": [asdict(t) for t in campaign.trials]}, indent=1, default=str))
    mode, compute = campaign.spec.mode, campaign.spec.compute
    total = len(pending)
    if mode == "simulated" and jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(run_trial, t, mode, out / "trials" / t.id, compute): t
                       for t in pending}
            for n, fut in enumerate(as_completed(futures), start=1):
                row = fut.result()
                records.append(table, row)
                progress(n, total, futures[fut], row)
    else:
        for n, trial in enumerate(pending, start=1):
            progress(n - 1, total, trial, None)
            row = run_trial(trial, mode, out / "trials" / trial.id, compute)
            records.append(table, row)
            progress(n, total, trial, row)
    return pending
