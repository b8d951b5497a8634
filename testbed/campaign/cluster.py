"""Campaign trials on a Ray cluster (`testbed campaign FILE --cluster ADDRESS`).

Ray places each trial by resources: an emulated trial takes the one unit of `testbed_host` an
emulation host advertises (a whole machine: root, OVS, Docker), so a host runs one emulated
trial at a time; a simulated trial takes a CPU and trials are spread over the nodes. The
worker runs the trial exactly as the local path does, into a scratch directory, and returns
the row with the directory packed; the driver unpacks it under results/<name>/trials/<id>/ and
appends the row to the one trials.csv as each trial ends.

A trial has side effects (a testbed up on some host), so Ray never retries one
(max_retries=0): a worker or host that dies gives a failed row with the reason, and the driver
then removes that trial's testbed wherever it is (and scratch directories of workers no longer
alive on that host, named by their process id). Testbeds of trials in flight are listed in
running.json, so a driver that was killed has them removed by the next run (--resume).
Hosts whose project differs from the driver's (source files and installed pinned
dependencies) are refused before anything runs, naming the host.
"""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import ray

from testbed.campaign.sweep import Trial
from testbed.raycluster import (  # noqa: F401 (connect, check_hosts: this module's API too)
    LABEL,
    RESOURCE,
    alive,
    check_hosts,
    connect,
    host_name,
    on,
    sweep_scratch,
)

Finished = Callable[[Trial, dict], None]

@ray.remote(num_cpus=0, max_retries=0)
def _remove(names: list[str]) -> list[str]:
    """Remove those of `names` that are testbeds on this host; returns the ones removed."""
    from testbed import lifecycle
    from testbed.net.ledger import known_testbeds

    here = [n for n in names if n in known_testbeds()]
    for n in here:
        lifecycle.down(n)
    sweep_scratch(SCRATCH_PREFIX)
    return here


SCRATCH_PREFIX = "testbed-trial-"


@ray.remote(max_retries=0)
def _trial(trial: Trial, mode: str, compute: str, name: str | None, plugins: list[str],
           k_paths: int) -> tuple[dict, bytes]:
    from testbed.campaign.trials import run_trial

    sweep_scratch(SCRATCH_PREFIX)
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-") as scratch:
        where = Path(scratch) / trial.id
        row = run_trial(trial, mode, where, compute, name, plugins, k_paths)
        blob = io.BytesIO()
        with tarfile.open(fileobj=blob, mode="w:gz") as tar:
            tar.add(where, arcname=".")
    row["host"] = host_name()
    return row, blob.getvalue()


def _unpack(blob: bytes, dest: Path) -> None:
    """A trial's files, packed by its worker, into dest (regular files and directories only,
    none outside dest)."""
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        members = [m for m in tar.getmembers() if (m.isfile() or m.isdir())
                   and not Path(m.name).is_absolute() and ".." not in Path(m.name).parts]
        tar.extractall(dest, members=members)


def remove_testbeds(names: Iterable[str]) -> list[str]:
    """Remove these testbeds on whichever hosts have them; returns those removed."""
    names = list(names)
    if not names:
        return []
    nodes = [n for n in alive() if n["Resources"].get(RESOURCE)]
    refs = [_remove.options(scheduling_strategy=on(n)).remote(names) for n in nodes]
    gone: list[str] = []
    for ref in refs:
        with contextlib.suppress(Exception):
            gone += ray.get(ref, timeout=300)
    if gone:  # sweep again once every removal has ended: hosts sharing a machine share /tmp,
        # and one host's sweep can run while another's removal still stops a run's writers
        for ref in [_remove.options(scheduling_strategy=on(n)).remote([]) for n in nodes]:
            with contextlib.suppress(Exception):
                ray.get(ref, timeout=60)
    return gone


def run_trials(pending: list[Trial], mode: str, out: Path, compute: str, plugins: list[str],
               k_paths: int, host: str | None, names: Callable[[Trial], str | None],
               in_flight: Callable[[list[dict]], None], finished: Finished) -> None:
    """Submit every pending trial and hand each row to `finished` as its trial ends;
    `in_flight` is told the trials (and testbeds) submitted and not yet ended."""
    from testbed.campaign.trials import failed_row

    options: dict = {"max_retries": 0}
    if mode == "emulated":
        options.update(num_cpus=0, resources={RESOURCE: 1})
    else:
        options.update(num_cpus=1, scheduling_strategy="SPREAD")
    if host:
        options["label_selector"] = {LABEL: host}
    refs: dict = {}
    for t in pending:
        name = names(t)
        refs[_trial.options(**options).remote(t, mode, compute, name, plugins, k_paths)] = (
            t, name)
    flight = lambda: in_flight([{"trial": t.id, "testbed": n} for t, n in refs.values()])  # noqa: E731
    flight()
    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            for ref in ready:
                trial, name = refs.pop(ref)
                try:
                    row, blob = ray.get(ref)
                    dest = out / "trials" / trial.id
                    dest.mkdir(parents=True, exist_ok=True)
                    _unpack(blob, dest)
                except ray.exceptions.RayError as e:
                    row = failed_row(trial, mode, f"the Ray worker running it was lost "
                                     f"({type(e).__name__}: {str(e).splitlines()[0][:200]})")
                    if name:
                        remove_testbeds([name])
                finished(trial, row)
                flight()
    except BaseException:  # Ctrl-C or a driver fault: nothing keeps running, nothing stays up
        for ref in refs:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        with contextlib.suppress(Exception):  # their workers gone before their testbeds go
            ray.wait(list(refs), num_returns=len(refs), timeout=30)
        remove_testbeds(n for _, n in refs.values() if n)
        raise
