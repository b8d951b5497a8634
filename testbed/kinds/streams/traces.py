"""Task trace files -> tidy tables: events, items (end-to-end), hops (per DAG edge), tasks
(per compute), and the per-job measured metrics that go beside the predicted ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

EVENT_COLUMNS = ["ts_ns", "item", "event", "peer", "bytes"]


def read_events(trace_dir: Path, job: str) -> pd.DataFrame:
    """All events of one job's task processes, with `task` taken from the file name."""
    frames = []
    for path in sorted(trace_dir.glob(f"{job}.*.csv")):
        task = path.name[len(job) + 1: -len(".csv")]
        df = pd.read_csv(path, names=EVENT_COLUMNS, dtype={"peer": str}, keep_default_na=False)
        df.insert(0, "task", task)
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["job", "task", *EVENT_COLUMNS])
    events = pd.concat(frames, ignore_index=True)
    events.insert(0, "job", job)
    return events.sort_values(["ts_ns", "task"], kind="stable").reset_index(drop=True)


def items_table(events: pd.DataFrame) -> pd.DataFrame:
    """One row per emitted item: emit and done times, end-to-end latency, status."""
    src = events[events.task == "source"]
    emit = src[src.event == "emit"].set_index("item")["ts_ns"]
    done = src[src.event == "done"].set_index("item")["ts_ns"]
    out = pd.DataFrame({"emit_ns": emit}).join(pd.DataFrame({"done_ns": done}))
    out["latency_ms"] = (out.done_ns - out.emit_ns) / 1e6
    out["status"] = np.where(out.done_ns.notna(), "done", "not completed")
    out = out.reset_index().rename(columns={"index": "item"})
    out.insert(0, "job", events.job.iloc[0] if len(events) else "")
    return out


def hops_table(events: pd.DataFrame) -> pd.DataFrame:
    """One row per item and DAG edge: when the sender finished sending, when the receiver had
    the whole message."""
    sent = events[events.event == "sent"][["job", "task", "item", "peer", "ts_ns", "bytes"]]
    sent = sent.rename(columns={"task": "from_task", "peer": "to_task", "ts_ns": "sent_ns"})
    recv = events[events.event == "recv"][["task", "item", "peer", "ts_ns"]]
    recv = recv.rename(columns={"task": "to_task", "peer": "from_task", "ts_ns": "recv_ns"})
    hops = sent.merge(recv, on=["item", "from_task", "to_task"], how="left")
    hops["transfer_ms"] = (hops.recv_ns - hops.sent_ns) / 1e6
    return hops


def tasks_table(events: pd.DataFrame) -> pd.DataFrame:
    """One row per item and task: last input received, compute start and end."""
    ev = events[events.event.isin(["recv", "start", "end"])]
    wide = ev.pivot_table(index=["job", "task", "item"], columns="event", values="ts_ns",
                          aggfunc="max").reset_index()
    wide = wide.rename(columns={"recv": "last_input_ns", "start": "start_ns", "end": "end_ns"})
    wide.columns.name = None
    for col in ("last_input_ns", "start_ns", "end_ns"):
        if col not in wide:
            wide[col] = pd.NA
    wide["compute_ms"] = (wide.end_ns - wide.start_ns) / 1e6
    return wide


def measured(items: pd.DataFrame, warmup_items: int = 1) -> dict:
    """Throughput (items/s) between completions after the warm-up, and latency percentiles."""
    done = items[items.status == "done"].sort_values("done_ns")
    steady = done.iloc[warmup_items:] if len(done) > warmup_items + 1 else done
    if len(steady) >= 2:
        span = (steady.done_ns.iloc[-1] - steady.done_ns.iloc[0]) / 1e9
        throughput = (len(steady) - 1) / span if span > 0 else float("nan")
    else:
        throughput = float("nan")
    lat = done.latency_ms
    return {"items_emitted": int(len(items)), "items_done": int(len(done)),
            "throughput_measured_items_s": throughput,
            "latency_ms_min": float(lat.min()) if len(lat) else float("nan"),
            "latency_ms_p50": float(lat.quantile(0.5)) if len(lat) else float("nan"),
            "latency_ms_p95": float(lat.quantile(0.95)) if len(lat) else float("nan")}


def errors(events: pd.DataFrame) -> list[str]:
    err = events[events.event == "error"]
    return [f"{r.task}: {r.peer}" for r in err.itertuples()]
