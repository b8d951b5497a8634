"""Drive a campaign: expand it, skip trials already recorded (--resume), run the rest
(simulated ones in parallel with --jobs N, emulated ones one at a time), append each row as soon
as its trial ends. The resolved campaign is saved beside the results, with a history of runs.

An emulated trial is announced in running.json (its testbed's name) before it starts and
struck off when its row is written; a campaign killed mid-trial leaves the entry, and the next
run first removes that trial's testbed (and every process in it), then runs the trial again.
A resume whose campaign changed (settings, input files, version) is refused with the list of
changes, unless `allow_changes` asks to run the trials the new campaign defines."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

from testbed.campaign import records
from testbed.campaign.sweep import Campaign, Trial, load_campaign, settings
from testbed.campaign.trials import columns, run_trial, testbed_name, workload_kind
from testbed.errors import InputError, TestbedError
from testbed.net.ledger import write_private

Progress = Callable[[int, int, Trial | None, dict | None], None]


def results_dir(campaign: Campaign, root: Path = Path("results")) -> Path:
    return root / campaign.spec.name


def changes(before: dict, now: dict) -> list[str]:
    """What differs between two campaigns' settings, one line per setting."""
    out = []
    for key in sorted(set(before) | set(now)):
        a, b = before.get(key), now.get(key)
        if json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True,
                                                                     default=str):
            brief = key.endswith("contents") or isinstance(a, dict) or isinstance(b, dict)
            out.append(f"{key} changed" if brief else f"{key}: {a!r} -> {b!r}")
    return out


def run_campaign(path: str | Path, resume: bool = False, jobs: int = 1, dry_run: bool = False,
                 root: Path = Path("results"), allow_changes: bool = False,
                 retry_failed: bool = False, cluster: str | None = None,
                 progress: Progress = lambda done, total, trial, row: None) -> list[Trial]:
    """Runs the campaign's pending trials; returns them (with --dry-run: only lists them).
    `retry_failed` (implies resume) runs failed trials again; their old rows move to
    failed_attempts.csv. `cluster` (a Ray address, or `auto`) runs the trials on that cluster's
    hosts (testbed/campaign/cluster.py)."""
    campaign = load_campaign(path)
    out = results_dir(campaign, Path(root))
    table = out / "trials.csv"
    resume = resume or retry_failed
    done = records.done_ids(table)
    if retry_failed and not dry_run:
        records.set_aside_failed(table)
        done = records.done_ids(table)
    elif retry_failed:
        done -= records.failed_ids(table)
    if done and not resume and not dry_run:
        raise InputError(f"{table} already has {len(done)} trials; pass --resume to continue "
                         "the campaign, or move that directory away to start over")
    now = json.loads(json.dumps(settings(campaign), default=str))
    history = _history(out)
    if done and history and not allow_changes:
        changed = changes(history[-1]["settings"], now)
        if changed:
            raise InputError(
                f"{out}: the campaign changed since its recorded trials ran: "
                + "; ".join(changed) + ". Its old rows would not match the new settings: "
                "move the directory away, or pass --allow-changes to run the trials the "
                "changed campaign defines beside the old rows")
    pending = [t for t in campaign.trials if t.id not in done]
    if dry_run:
        return pending
    mode, compute = campaign.spec.mode, campaign.spec.compute
    # a topology split over hosts takes the whole cluster: its trials run one after another
    # from here, each topology built over the hosts (`testbed up --cluster`)
    split = cluster if mode == "emulated" and any(
        t.topology.get("hosts") for t in campaign.trials) else None
    if cluster:
        from testbed.campaign import cluster as on_ray

        on_ray.connect(cluster)
        on_ray.check_hosts("simulated" if split else mode, campaign.spec.host)
        cluster = None if split else cluster  # trials on the hosts, or from here
    out.mkdir(parents=True, exist_ok=True)
    history.append({"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "resume": resume, "pending": len(pending), "cluster": split or cluster,
                    "settings": now})
    (out / "campaign.json").write_text(json.dumps({
        "spec": campaign.spec.model_dump(), "source": str(campaign.source),
        "trials": [{k: v for k, v in asdict(t).items() if not k.startswith("base_")}
                   for t in campaign.trials],
        "history": history}, indent=1, default=str))
    _finish_interrupted(out, cluster)
    plugins = [str((campaign.source.parent / p).resolve()) if p.endswith(".py") or "/" in p
               else p for p in campaign.spec.plugins]
    cols = columns(list(campaign.spec.grid), mode,
                   workload_kind(campaign.trials[0].jobs) if campaign.trials else "streams")
    total, done_now = len(pending), [0]
    progress(0, total, None, None)

    def finished(trial: Trial, row: dict) -> None:
        records.append(table, row, cols)
        done_now[0] += 1
        progress(done_now[0], total, trial, row)

    if cluster:
        on_ray.run_trials(pending, mode, out, compute, plugins, campaign.spec.k_paths,
                          campaign.spec.host,
                          names=lambda t: testbed_name(t) if mode == "emulated" else None,
                          in_flight=lambda entries: _running(out, entries, cluster),
                          finished=finished)
    elif mode == "simulated" and jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(run_trial, t, mode, out / "trials" / t.id, compute, None,
                                   plugins, campaign.spec.k_paths): t
                       for t in pending}
            for fut in as_completed(futures):
                finished(futures[fut], fut.result())
    else:
        for trial in pending:
            progress(done_now[0], total, trial, None)
            name = testbed_name(trial)
            if mode == "emulated":
                _running(out, [{"trial": trial.id, "testbed": name}], None)
            row = run_trial(trial, mode, out / "trials" / trial.id, compute, name, plugins,
                            campaign.spec.k_paths, split)
            finished(trial, row)
            _running(out, [], None)
    return pending


def _history(out: Path) -> list[dict]:
    try:
        return list(json.loads((out / "campaign.json").read_text()).get("history", []))
    except (OSError, ValueError):
        return []


def _running(out: Path, entries: list[dict], cluster: str | None) -> None:
    """Announce the trials whose testbeds are up now (an empty list strikes them off)."""
    path = out / "running.json"
    if not entries:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    write_private(path, json.dumps({"cluster": cluster, "trials": entries}))


def _finish_interrupted(out: Path, cluster: str | None) -> None:
    """Remove the testbeds of trials a killed campaign left running (their rows were never
    written, so those trials run again): here, or on the cluster's hosts."""
    path = out / "running.json"
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    entries = entry.get("trials", [entry])  # one local trial, as written before clusters
    names = [e["testbed"] for e in entries if e.get("testbed")]
    if entry.get("cluster"):
        if not cluster:
            raise InputError(
                f"{path}: the last run of this campaign was on the Ray cluster "
                f"{entry['cluster']} and was stopped with testbeds up there ("
                + ", ".join(names) + "): resume with --cluster ADDRESS so that they are "
                "removed first, or remove them on their hosts (testbed down --name NAME) "
                "and delete this file")
        from testbed.campaign.cluster import remove_testbeds

        remove_testbeds(names)
    else:
        from testbed import lifecycle as api
        from testbed.net.ledger import known_testbeds

        for name in names:
            if name in known_testbeds():
                with contextlib.suppress(TestbedError):
                    api.down(name)
    path.unlink()
