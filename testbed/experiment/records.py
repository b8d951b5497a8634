"""The tables every run writes whatever its workload kind: links.csv, nodes.csv and host.csv
(sampled counters, usage, and this machine's speed beside the profile's), board_stats.csv
(boards' own statistics, on the run's clock), flows.csv (one row per flow installation, with
what each switch forwarded), node_speeds.csv (the profile the scheduler planned with) and
run.json (everything needed to tell runs apart)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from pathlib import Path

import pandas as pd

VERSIONED = ("edge-testbed", "os-ken", "pyroute2", "pandas", "scipy", "torch")


def write_shared(out: Path, sampler, collectors: list, epoch0: float, flow_rows: list[dict],
                 speeds: dict[str, float]) -> None:
    pd.DataFrame(sampler.links).to_csv(out / "links.csv", index=False)
    pd.DataFrame(sampler.nodes).to_csv(out / "nodes.csv", index=False)
    pd.DataFrame(sampler.host).to_csv(out / "host.csv", index=False)
    if collectors:  # on the run's clock, like nodes.csv
        rows = [{**r, "t_s": round(r["t_s"] - epoch0, 3)} for c in collectors for r in c.records]
        pd.DataFrame(rows).to_csv(out / "board_stats.csv", index=False)
    pd.DataFrame(flow_rows).to_csv(out / "flows.csv", index=False)
    pd.DataFrame([{"node": n, "speed_gops": s} for n, s in speeds.items()]).to_csv(
        out / "node_speeds.csv", index=False)


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in VERSIONED:
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


def write_metadata(out: Path, **facts) -> None:
    """run.json: the caller's facts plus versions, host and start time."""
    meta = {**facts, "versions": versions(),
            "host": {"uname": " ".join(platform.uname()), "cpus": os.cpu_count()},
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (out / "run.json").write_text(json.dumps(meta, indent=1))
