"""The `testbed` command: parse arguments, call testbed.api, print with rich. No logic here.

Exit codes: 0 ok, 1 the operation failed, 2 bad input (nothing was built).
"""

from __future__ import annotations

import json
import signal
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from testbed import api
from testbed.errors import TestbedError
from testbed.units import parse_time_ms

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Hybrid edge testbed: YAML topologies become shaped, SDN-routed networks.")
flow_app = typer.Typer(no_args_is_help=True, help="Steer individual flows: path and rate.")
app.add_typer(flow_app, name="flow")
image_app = typer.Typer(no_args_is_help=True, help="Node images built here (no registry needed).")
app.add_typer(image_app, name="image")
node_app = typer.Typer(no_args_is_help=True, help="Change or inspect a running node.")
app.add_typer(node_app, name="node")
link_app = typer.Typer(no_args_is_help=True, help="Change a running link: rate, delay, loss, "
                       "up/down (in place).")
app.add_typer(link_app, name="link")
out = Console(soft_wrap=True, emoji=False)  # "ilp:abc:" is a value, not an emoji code
err = Console(stderr=True, soft_wrap=True, emoji=False)

NameOpt = Annotated[str | None, typer.Option("--name", "-n", help="testbed name")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]
SchedulerOpt = Annotated[str, typer.Option("--scheduler", "-s", help="see `testbed schedulers`")]
KPathsOpt = Annotated[int, typer.Option(help="candidate paths per flow")]
AcceptKeysOpt = Annotated[bool, typer.Option(
    "--accept-new-host-keys", help="trust devices' unknown SSH host keys and save them")]
GopsOpt = Annotated[float | None, typer.Option(help="node speed per core when not measured")]
PluginOpt = Annotated[list[str] | None, typer.Option(
    "--plugin", help="import a scheduler plug-in first: module name or .py file (repeatable)")]


def _load_plugins(modules: list[str] | None) -> None:
    api.load_plugins(modules)


def _flow_client(name: str | None):
    return api.flows(name)


def _version(show: bool) -> None:
    if show:
        print(f"testbed {api.version()}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", help="print the version and exit", is_eager=True,
        callback=_version)] = False) -> None:
    """Hybrid edge testbed: YAML topologies become shaped, SDN-routed networks."""


@app.command()
def up(file: Annotated[str, typer.Argument(help="topology YAML")], name: NameOpt = None,
       accept_new_host_keys: AcceptKeysOpt = False,
       cluster: Annotated[str | None, typer.Option(
           help="Ray cluster (HEAD:6379, or auto) whose hosts build a topology split with "
                "`hosts:`; each host's node is labelled testbed-host=<host>")] = None,
       ) -> None:
    """Bring a topology up; returns once every node reaches every other."""
    with err.status("starting") as st:
        ledger = api.up(file, name, progress=lambda s: st.update(f"[bold]up[/]: {s}"),
                        accept_new_host_keys=accept_new_host_keys, cluster=cluster)
    n = len(ledger.topology["nodes"])
    out.print(f"[green]testbed {ledger.name} is up[/]: {n} nodes, "
              f"{len(ledger.topology['links'])} links, controller pid "
              f"{ledger.controller.pid if ledger.controller else '?'}")
    _print_fabric(ledger.extra.get("fabric", {}))


def _print_fabric(fab: dict) -> None:
    """The proof and the fabric's own latency; a warning when hops cost more than 1 ms."""
    if not fab:
        return
    scope = "all pairs" if fab.get("all_pairs") else "every link both ways + a seeded sample"
    line = f"{fab['pairs_proved']} pairs proved ({scope}); {fab['datapath']} datapath"
    if fab.get("switch_daemons", 1) > 1:
        line += f" ({fab['switch_daemons']} switch daemons)"
    if fab.get("rtt_per_hop_ms") is not None:
        line += (f"; idle RTT {fab['rtt_one_hop_ms']:.2f} ms over 1 hop, "
                 f"{fab['rtt_longest_path_ms']:.2f} ms over {fab['longest_path_hops']} hops "
                 f"({fab['rtt_per_hop_ms']:.2f} ms per hop)")
    out.print(line)
    if fab.get("slow"):
        err.print(f"[yellow]warning:[/] the fabric itself adds {fab['rtt_per_hop_ms']:.2f} ms "
                  "of round trip per hop with no shaping configured: measured latencies "
                  "(items, requests, rounds) include it; see `testbed doctor` (datapath) and "
                  "docs/benchmarks.md")


@app.command()
def check(name: NameOpt = None,
          all_pairs: Annotated[bool, typer.Option(
              "--all-pairs", help="prove every ordered pair of nodes, not a sample")] = False,
          ) -> None:
    """Prove the running network forwards (every link both ways and a seeded sample of
    routes, or every pair) and measure the fabric's idle per-hop latency."""
    with err.status("checking") as st:
        fab = api.check(name, all_pairs, progress=lambda s: st.update(f"[bold]check[/]: {s}"))
    _print_fabric(fab)


@app.command()
def down(name: NameOpt = None,
         all_: Annotated[bool, typer.Option("--all", help="every testbed on this host")] = False,
         force: Annotated[bool, typer.Option(
             help="also when a device cannot be reached: remove this host's part and its "
                  "record (the device keeps its tunnel and files)")] = False,
         ) -> None:
    """Remove everything a testbed made (also after a crash or kill -9)."""
    if all_:
        for tb, removed in api.down_all().items():
            out.print(f"removed {tb}: {'; '.join(removed) or 'nothing left'}")
        return
    removed = api.down(name, force=force)
    out.print(f"removed: {'; '.join(removed)}" if removed else "nothing to remove")


@app.command("ls")
def list_testbeds(as_json: JsonOpt = False) -> None:
    """The testbeds up on this host: name, phase, size, controller, topology file."""
    found = api.testbeds()
    if as_json:
        print(json.dumps(found, indent=1))
        return
    if not found:
        out.print("no testbed is up; start one with `testbed up FILE`")
        return
    t = Table("name", "phase", "nodes", "links", "controller", "topology file")
    for tb in found:
        t.add_row(tb["name"], tb["phase"], str(tb["nodes"]), str(tb["links"]),
                  "running" if tb["controller_running"] else "[red]NOT RUNNING[/]",
                  tb["topology_file"])
    out.print(t)


@app.command()
def status(name: NameOpt = None, as_json: JsonOpt = False) -> None:
    """Nodes with addresses and kinds, links with shaping, controller state."""
    st = api.status(name)
    if as_json:
        print(json.dumps(st, indent=1))
        return
    ctl = st["controller"]
    state = ("[green]running[/]" if ctl["running"]
             else "[red]NOT RUNNING[/] (`testbed up` restarts it)")
    out.print(f"[bold]{st['name']}[/] ({st['phase']}), controller pid {ctl['pid']} {state}, "
              f"{ctl['switches_ready']} switches ready, {ctl['flows']} flows")
    _print_fabric(st.get("fabric", {}))
    split = any("host" in info for info in st["nodes"].values())  # over several hosts
    t = Table("node", "ip", "kind", *(["host"] if split else []), "cpu", "memory MB",
              "oom kills", "state")
    for node, info in st["nodes"].items():
        box = info.get("container", {})
        state = box.get("status", "") or ("up" if info["present"] else "")
        if "fix" in box:
            state += f" (detached from the fabric; run `{box['fix']}`)"
        if info.get("stopped"):
            state = f"[red]STOPPED[/] (`testbed node start {node}`)"
        if "device" in info:
            dev = info["device"]
            state = f"tunnel {dev['tunnel']}" if dev["reachable"] else "UNREACHABLE"
        kills = info["oom_kills"]
        held = info.get("applied", {})  # read back from the kernel, not the file
        t.add_row(node, info["ip"], info["kind"], *([info.get("host", "")] if split else []),
                  f"{held['cpu']:g}" if held.get("cpu")
                  else str(info["cpu"] or "-"),
                  str(held.get("memory_mb") or info["memory_mb"] or "-"),
                  f"[red]{kills}[/]" if kills else "0",
                  state if info["present"] else f"[red]{state or 'missing'}[/]")
    out.print(t)
    lt = Table("link", "bw Mbit/s", "delay ms", "loss %", "state", "interfaces")
    for lk in st["links"]:
        up = lk["state"] == "up"
        lt.add_row("-".join(lk["between"]), str(lk["bw_mbit"] or "unshaped"),
                   str(lk["delay_ms"] or "-"), str(lk["loss_pct"] or "-"),
                   "up" if up else f"[red]{lk['state'].upper()}[/] (rerouted around)",
                   " ".join(lk["interfaces"]))
    out.print(lt)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec(ctx: typer.Context, node: Annotated[str, typer.Argument(help="node name")],
         name: NameOpt = None,
         unprivileged: Annotated[bool, typer.Option(
             help="run as user nobody with no capabilities (no Docker socket, no OVSDB)")
         ] = False) -> None:
    """Run a command inside a node: testbed exec NODE -- CMD ARGS..."""
    argv = [a for a in ctx.args]
    if argv and argv[0] == "--":
        argv = argv[1:]
    sys.stdout.flush()
    api.exec_in_node(name, node, argv, unprivileged)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def capture(ctx: typer.Context, a: Annotated[str, typer.Argument(help="one end of the link")],
            b: Annotated[str, typer.Argument(help="the other end")],
            node_side: Annotated[str | None, typer.Option(
                help="capture at this end's interface (default: A)")] = None,
            write: Annotated[str | None, typer.Option(
                "--write", "-w", help="write a pcap file instead of printing")] = None,
            count: Annotated[int | None, typer.Option("--count", "-c",
                                                      help="stop after N packets")] = None,
            duration: Annotated[float | None, typer.Option(
                parser=_seconds, help="stop after: seconds, or 30s, 500ms")] = None,
            name: NameOpt = None) -> None:
    """Capture packets on a link (transit traffic too): testbed capture A B [-- FILTER]."""
    bpf = [a for a in ctx.args]
    if bpf and bpf[0] == "--":
        bpf = bpf[1:]
    code = api.capture(name, a, b, node_side, count, write, duration, bpf)
    if code:
        raise typer.Exit(code)


@app.command()
def doctor(topology: Annotated[str | None, typer.Argument(
               help="topology YAML: also check its devices over SSH")] = None,
           as_json: JsonOpt = False, accept_new_host_keys: AcceptKeysOpt = False) -> None:
    """What this host can emulate, and what that means for topologies."""
    caps = api.doctor(topology, accept_new_host_keys)
    if as_json:
        print(json.dumps(caps, indent=1))
        if any(dev["missing"] for dev in caps.get("devices", {}).values()):
            raise typer.Exit(1)
        return
    meaning = {
        "netem": "link delay, jitter and loss (without it, topologies asking for them fail)",
        "htb": "link and per-flow bandwidth shaping",
        "vxlan": "tunnels to physical devices",
        "ovs": "Open vSwitch running (required)",
        "ovs_kernel_datapath": "kernel datapath (else the userspace datapath is used)",
        "docker": "docker container nodes",
        "iperf3": "throughput measurements",
    }
    t = Table("feature", "here", "meaning")
    for key, text in meaning.items():
        ok = caps[key]
        t.add_row(key, "[green]yes[/]" if ok else "[red]no[/]", text)
    for c, ok in caps["cgroups"].items():
        t.add_row(f"cgroup {c}", "[green]yes[/]" if ok else "[red]no[/]",
                  "node CPU/memory limits and process tracking")
    t.add_row("nodes this host holds", f"~{caps['max_nodes_estimate']:,}",
              "estimate: half the available memory at ~6.5 MB per node (`up` refuses more)")
    t.add_row("cgroup mode", caps["cgroup_mode"], "v1, hybrid (v1 controllers) or v2 (unified)")
    t.add_row("ovs datapath", caps["ovs_datapath"],
              "what `up` uses: system (kernel module loaded) or netdev (userspace, polled by "
              "ovs-vswitchd's main thread; `up` then spreads switches over one ovs-vswitchd "
              "per 4 switches, each in its own namespace: `fabric: {switches_per_daemon: N}`)")
    t.add_row("docker cgroup driver", str(caps["docker_cgroup_driver"] or "-"),
              "cgroupfs: containers inside their node's cgroup; systemd: in testbed.slice")
    out.print(t)
    for node, dev in caps.get("devices", {}).items():
        facts = ", ".join(f"{k} {dev[k]}" for k in ("kernel", "python") if dev.get(k))
        if dev["missing"]:
            out.print(f"[red]device {node}[/]: " + escape("; ".join(dev["missing"])))
        else:
            out.print(f"[green]device {node}[/]: ready ({escape(facts)}"
                      f"{', tegrastats' if dev.get('tegrastats') else ''})")
    if any(dev["missing"] for dev in caps.get("devices", {}).values()):
        raise typer.Exit(1)  # a device that cannot join is a failed check


@app.command()
def schema() -> None:
    """Print the JSON Schema of the topology file format."""
    print(json.dumps(api.topology_schema(), indent=1))


@app.command()
def schedulers(plugin: PluginOpt = None) -> None:
    """List the schedulers `schedule`, `simulate` and campaigns can use."""
    _load_plugins(plugin)
    t = Table("name", "kind", "what it does")
    for name, kind, summary in api.schedulers():
        t.add_row(name, kind, summary)
    out.print(t)


@app.command()
def schedule(topology: Annotated[str, typer.Argument(help="topology YAML")],
             jobs: Annotated[str, typer.Argument(help="jobs YAML")],
             scheduler: SchedulerOpt = "otfa", k_paths: KPathsOpt = 3,
             gops_per_core: GopsOpt = None, as_json: JsonOpt = False,
             plugin: PluginOpt = None) -> None:
    """Run a scheduler offline (no network) and print its Plan with predicted metrics."""
    _load_plugins(plugin)
    plan = api.schedule(topology, jobs, scheduler, k_paths, gops_per_core)
    if as_json:
        print(plan.to_json())
        return
    if plan.kind == "requests":
        _dispatch_table(plan)
        return
    if plan.kind == "training":
        _training_table(plan)
        return
    if plan.kind == "video":
        _video_plan_table(plan)
        return
    t = Table("job", "placement", "flows (path @ Mbit/s)", "predicted items/s", "bottleneck",
              title=f"{scheduler}: {len(plan.jobs)} jobs placed, {len(plan.waiting)} waiting, "
                    f"decided in {plan.decision_s * 1000:.0f} ms")
    for job in plan.jobs:
        nodes: dict[str, list[str]] = {}
        for p in plan.placements_of(job):
            nodes.setdefault(p.node, []).append(p.task)
        placement = "; ".join(f"{n}: {','.join(ts)}" for n, ts in nodes.items())
        flows = "; ".join(f"{'-'.join(f.path)} @ {f.rate_mbit:.3g}" for f in plan.flows_of(job))
        pred = plan.predicted[job]
        t.add_row(job, placement, flows or "-", f"{pred.throughput:.4g}", pred.bottleneck)
    out.print(t)
    if plan.waiting:
        out.print(f"waiting (did not fit): {', '.join(plan.waiting)}")


@app.command("train-policy")
def train_policy(policy: Annotated[str, typer.Argument(help="corais")],
                 edges: Annotated[int, typer.Option(help="edges per generated instance")] = 10,
                 requests: Annotated[int, typer.Option(help="new requests per instance")] = 100,
                 minutes: Annotated[float, typer.Option(help="training wall time")] = 20.0,
                 seed: Annotated[int, typer.Option(help="instances and initial weights")] = 0,
                 out_file: Annotated[str | None, typer.Option("--out", help="policy file")] = None
                 ) -> None:
    """Train a learned dispatch policy on instances generated as in CoRaiS's section V-A."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    target = out_file or f"policies/{policy}-{edges}x{requests}.pt"
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(),
                  console=err) as bar:
        task = bar.add_task("training", total=1.0)

        def progress(fraction: float, row: dict) -> None:
            bar.update(task, completed=fraction, description=f"step {row['step']}: greedy "
                       f"makespan {row['greedy_makespan_val']:.3f}")

        meta = api.train_policy(policy, edges, requests, minutes, target, seed, progress)
    out.print(f"{target}: {meta['steps']} steps in {meta['train_s']:.0f} s; learning curve in "
              f"{target.removesuffix('.pt')}.curve.png")


@app.command()
def simulate(topology: Annotated[str, typer.Argument(help="topology YAML")],
             jobs: Annotated[str, typer.Argument(help="jobs YAML")],
             scheduler: SchedulerOpt = "otfa", k_paths: KPathsOpt = 3,
             gops_per_core: GopsOpt = None, as_json: JsonOpt = False,
             plugin: PluginOpt = None) -> None:
    """Event-driven simulation of an online scheduler: arrivals, runs, releases (no network)."""
    _load_plugins(plugin)
    res = api.simulate(topology, jobs, scheduler, k_paths, gops_per_core)
    summary = {"scheduler": scheduler, "jobs": len(res.jobs),
               "mean_throughput": res.mean_throughput, "mean_waiting_s": res.mean_waiting_s,
               "unplaced": res.unplaced, "decisions": res.decisions,
               "decision_s_max": res.decision_s_max}
    if as_json:
        from dataclasses import asdict

        print(json.dumps({**summary, "per_job": [asdict(j) for j in res.jobs]}, indent=1))
        return
    out.print(f"{scheduler}: {len(res.jobs)} jobs, mean throughput "
              f"{res.mean_throughput:.4g} items/s, mean waiting {res.mean_waiting_s:.2f} s, "
              f"{res.unplaced} never placed, {res.decisions} decisions "
              f"(slowest {res.decision_s_max * 1000:.0f} ms)")


def _seconds(text: str) -> float:
    """A --duration: plain seconds, or with a unit as in the YAML files ("30s", "500ms")."""
    try:
        return float(text) if text.replace(".", "", 1).isdigit() else parse_time_ms(text) / 1000
    except ValueError as e:
        raise typer.BadParameter(f"{e}, or plain seconds: 30") from None


@app.command()
def run(jobs: Annotated[str, typer.Argument(help="jobs YAML")],
        scheduler: SchedulerOpt = "otfa",
        duration: Annotated[float | None, typer.Option(
            parser=_seconds, help="how long each job runs: seconds, or 30s, 500ms")] = None,
        seed: Annotated[int | None, typer.Option(help="arrivals and random sources")] = None,
        out_dir: Annotated[str | None, typer.Option("--out", help="run directory")] = None,
        compute: Annotated[str, typer.Option(help="synthetic or torch")] = "synthetic",
        window: Annotated[int | None, typer.Option(help="items in flight per job")] = None,
        rate_fps: Annotated[float | None, typer.Option(help="cap on frames/s")] = None,
        resolution: Annotated[int, typer.Option(help="torch models' input size")] = 224,
        unprivileged: Annotated[bool, typer.Option(
            help="task processes run as user nobody with no capabilities")] = False,
        timeline: Annotated[str | None, typer.Option(
            help="changes during the run (default: the topology's timeline:)")] = None,
        server_mode: Annotated[str | None, typer.Option(
            help="training: split-nonpipe, splitpipe-bf or splitpipe-rw (default: the "
                 "file's server_mode)")] = None,
        name: NameOpt = None, plugin: PluginOpt = None) -> None:
    """Run jobs on the running testbed: decide, enforce, execute, trace (results/<run>/)."""
    _load_plugins(plugin)
    import time as _time
    from pathlib import Path

    run_dir = Path(out_dir or f"results/{_time.strftime('%Y%m%d-%H%M%S')}-{scheduler}")
    opts = api.RunOptions(scheduler=scheduler, out_dir=run_dir, duration_s=duration, seed=seed,
                      compute=compute, window=window, rate_fps=rate_fps,
                      resolution=resolution, unprivileged=unprivileged,
                      timeline=Path(timeline) if timeline else None,
                      server_mode=server_mode)
    with err.status("running") as st:
        jobs_df = api.experiment(name, jobs, opts, progress=lambda s: st.update(s))
    if (run_dir / "rounds.csv").exists():  # a training run: one row per round
        _rounds_table(jobs_df, run_dir)
        return
    if "fps_measured" in jobs_df:  # a video run: one row per camera stream
        _streams_table(jobs_df, scheduler, run_dir)
        return
    if "makespan_measured_s" in jobs_df:  # a requests run: one row per period
        _periods_table(jobs_df, scheduler, run_dir)
        if (jobs_df.status != "done").any():
            raise typer.Exit(1)
        return
    t = Table("job", "status", "measured items/s", "predicted items/s", "ratio",
              "latency p50 ms", "min ms", "unloaded predicted ms", "waiting s",
              title=f"{scheduler}: measured vs predicted ({run_dir})")
    for r in jobs_df.itertuples():
        t.add_row(r.job, escape(r.status if not r.reason else f"{r.status}: {r.reason}"[:60]),
                  f"{r.throughput_measured_items_s:.3f}", f"{r.throughput_predicted_items_s:.3f}",
                  f"{r.fidelity:.2f}", f"{r.latency_ms_p50:.0f}", f"{r.latency_ms_min:.0f}",
                  f"{r.latency_ms_unloaded_predicted:.0f}", f"{r.waiting_s:.2f}")
    out.print(t)
    if (jobs_df.status != "done").any():
        raise typer.Exit(1)


def _rounds_table(rounds, run_dir) -> None:
    import json

    meta = json.loads((run_dir / "run.json").read_text())
    t = Table("round", "measured s", "predicted s", "ratio", "shared-server predicted s",
              "ratio", "accuracy %", "loss",
              "server peak RSS MB", "server active peak MB", "MB sent",
              title=f"{meta['scheduler']} ({meta['workload']['model']}): round time measured "
                    f"vs predicted ({run_dir})")
    for r in rounds.itertuples():
        t.add_row(str(r.round), f"{r.round_time_measured_s:.2f}",
                  f"{r.round_time_predicted_s:.2f}", f"{r.fidelity:.2f}",
                  f"{r.round_time_predicted_shared_s:.2f}", f"{r.fidelity_shared:.2f}",
                  f"{r.accuracy:.1f}",
                  f"{r.loss:.3f}", f"{r.server_peak_mem_mb:.0f}",
                  f"{r.server_active_peak_mb:.0f}", f"{r.bytes_sent / 1e6:.1f}")
    out.print(t)
    if meta.get("status") != "done":
        err.print(f"training {meta.get('status')}: {escape(meta.get('reason') or '')}")
        raise typer.Exit(1)


def _streams_table(jobs_df, scheduler: str, run_dir) -> None:
    t = Table("stream", "status", "detect on", "re-ID on (instance)", "measured fps",
              "predicted fps", "ratio", "latency p50 ms", "p95 ms", "eq. 5.2 ms",
              title=f"{scheduler}: frame rate and latency, measured vs predicted ({run_dir})")
    for r in jobs_df.itertuples():
        t.add_row(r.job, escape(r.status if r.status == "done" else
                                f"{r.status}: {r.reason}"[:50]),
                  r.detect_on or "-", f"{r.reid_on} (#{r.reid_instance})" if r.reid_on else "-",
                  f"{r.fps_measured:.2f}", f"{r.fps_predicted:.2f}", f"{r.fidelity:.2f}",
                  f"{r.latency_ms_p50:.0f}", f"{r.latency_ms_p95:.0f}",
                  f"{r.latency_ms_predicted:.0f}")
    out.print(t)
    if (jobs_df.status != "done").any():
        raise typer.Exit(1)


def _video_plan_table(plan) -> None:
    ext = plan.extension
    t = Table("stream", "detect on", "re-ID on (instance)", "predicted fps", "eq. 5.2 ms",
              title=f"{plan.scheduler}: {len(ext.detect)} streams mapped, "
                    f"{len(ext.instances)} re-ID instances, decided in "
                    f"{plan.decision_s * 1000:.2f} ms")
    for s, d in ext.detect.items():
        n = ext.reid[s]
        t.add_row(s, d, f"{ext.instances[n]} (#{n})", f"{ext.fps_predicted[s]:.2f}",
                  f"{ext.latency_predicted[s]['total_s'] * 1000:.0f}")
    out.print(t)
    if ext.not_placed:
        out.print(f"not placed (no memory for their models): {', '.join(ext.not_placed)}")


def _training_table(plan) -> None:
    ext = plan.extension
    t = Table("device", "blocks on the device", "bandwidth Mbit/s", "compute s", "comm s",
              "predicted round s",
              title=f"{plan.scheduler}: predicted round {ext.makespan_predicted_s:.3f} s "
                    f"(server {ext.server}, {ext.blocks} blocks), decided in "
                    f"{plan.decision_s * 1000:.1f} ms")
    for d, cut in ext.cuts.items():
        t.add_row(d, f"1-{cut}" + (" (all)" if cut == ext.blocks else ""),
                  f"{ext.bandwidth_mbit[d]:.2f}", f"{ext.compute_predicted_s[d]:.3f}",
                  f"{ext.comm_predicted_s[d]:.3f}", f"{ext.round_predicted_s[d]:.3f}")
    out.print(t)


def _dispatch_table(plan) -> None:
    ext = plan.extension
    t = Table("edge", "requests run here", "moved in", "predicted completion s",
              title=f"{plan.scheduler}: {len(plan.placements)} requests, predicted makespan "
                    f"{ext.makespan_predicted_s:.3f} s, decided in "
                    f"{plan.decision_s * 1000:.1f} ms")
    moved = {f.job for f in plan.flows}
    for edge, done_s in ext.edge_time_predicted_s.items():
        here = [p.job for p in plan.placements if p.node == edge]
        t.add_row(edge, str(len(here)), str(sum(j in moved for j in here)), f"{done_s:.3f}")
    out.print(t)
    if ext.variant:
        out.print("variants: " + ", ".join(f"{v} x{list(ext.variant.values()).count(v)}"
                                           for v in sorted(set(ext.variant.values()))))


def _periods_table(df, scheduler: str, run_dir) -> None:
    t = Table("period", "status", "requests", "moved", "makespan measured s", "predicted s",
              "ratio", "decision ms", title=f"{scheduler}: measured vs predicted ({run_dir})")
    for r in df.itertuples():
        t.add_row(str(r.period), escape(r.status if not r.reason else
                                        f"{r.status}: {r.reason}"[:60]),
                  str(r.requests), str(r.moved), f"{r.makespan_measured_s:.3f}",
                  f"{r.makespan_predicted_s:.3f}", f"{r.fidelity:.2f}", f"{r.decision_ms:.1f}")
    out.print(t)


@app.command()
def campaign(file: Annotated[str, typer.Argument(help="campaign YAML")],
             resume: Annotated[bool, typer.Option(help="skip trials already recorded")] = False,
             retry_failed: Annotated[bool, typer.Option(
                 help="resume, and run failed trials again (their rows move to "
                      "failed_attempts.csv)")] = False,
             jobs: Annotated[int, typer.Option("--jobs", "-j",
                                               help="parallel simulated trials")] = 1,
             dry_run: Annotated[bool, typer.Option(help="list the trials only")] = False,
             out_root: Annotated[str, typer.Option(
                 "--out", help="results root; the campaign writes to OUT/<name>")] = "results",
             plugin: PluginOpt = None,
             allow_changes: Annotated[bool, typer.Option(
                 help="resume a changed campaign: run the trials it now defines beside the "
                      "recorded rows")] = False,
             cluster: Annotated[str | None, typer.Option(
                 help="run the trials on a Ray cluster: HEAD:6379, or auto for the one "
                      "started on this machine (README, 'Campaigns on a cluster')")] = None,
             ) -> None:
    """Run a sweep: grid x repetitions, one row per trial in OUT/<name>/trials.csv.
    Exit code 1 when any trial failed or was partial."""
    from pathlib import Path

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    _load_plugins(plugin)
    if dry_run:
        trials = api.campaign(file, resume=resume, dry_run=True, root=Path(out_root),
                              retry_failed=retry_failed)
        t = Table("trial", "scheduler", "parameters", "repetition", "seed",
                  title=f"{len(trials)} trials to run")
        for tr in trials:
            t.add_row(tr.id, tr.scheduler, ", ".join(f"{k}={v}" for k, v in tr.params.items()),
                      str(tr.repetition), str(tr.seed))
        out.print(t)
        return
    bad: list[str] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}"
                  "/{task.total}"), TimeRemainingColumn(), console=err) as bar:
        task = bar.add_task("campaign", total=None)

        def progress(done, total, trial, row):
            bar.update(task, total=total, completed=done, description="campaign" if trial is
                       None else f"trial {trial.id} ({trial.scheduler})")
            if row and row["status"] != "done":
                bad.append(f"{row['status']} {trial.id}: {row['reason']}")

        trials = api.campaign(file, resume=resume, jobs=jobs, progress=progress,
                              allow_changes=allow_changes, root=Path(out_root),
                              retry_failed=retry_failed, cluster=cluster)
    failed = sum(b.startswith("failed") for b in bad)
    out.print(f"{len(trials)} trials run: {len(trials) - len(bad)} done, "
              f"{len(bad) - failed} partial, {failed} failed"
              + ("" if trials else " (nothing pending; --retry-failed runs failed ones again)"))
    for b in bad:
        out.print(f"  {escape(b)}")
    if bad:
        raise typer.Exit(1)


@app.command()
def export(results: Annotated[str, typer.Argument(help="results/<campaign>")],
           fmt: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv") -> None:
    """Merge every trial's traces into one file per kind (with the trial's parameters)."""
    for path in api.export_campaign(results, fmt):
        out.print(str(path))


@app.command()
def plot(results: Annotated[str, typer.Argument(help="results/<campaign> or a run directory")],
         fmt: Annotated[str, typer.Option("--format", help="comma-separated: png,pdf,svg")]
         = "png,pdf",
         size: Annotated[str, typer.Option(help="width x height in inches")] = "6x4",
         dpi: Annotated[int, typer.Option(help="dots per inch (PNG)")] = 150) -> None:
    """Figures for a paper: metric vs swept parameter, one marker and line style per
    scheduler, 95% confidence intervals over repetitions; partial/failed trials left out.
    Given one run's directory: throughput over time with the timeline's changes marked."""
    try:
        w, h = (float(v) for v in size.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"--size {size!r}: write WIDTHxHEIGHT in inches, e.g. 6x4") \
            from None
    for path in api.plot_campaign(results, tuple(f.strip() for f in fmt.split(",")), (w, h),
                                  dpi):
        out.print(str(path))


@flow_app.command("add")
def flow_add(src: Annotated[str, typer.Option(help="source node")],
             dst: Annotated[str, typer.Option(help="destination node")],
             path: Annotated[str | None, typer.Option(help="nodes, e.g. e1,e2,e3")] = None,
             proto: Annotated[str, typer.Option(help="tcp or udp")] = "tcp",
             sport: Annotated[int | None, typer.Option(help="source port")] = None,
             dport: Annotated[int | None, typer.Option(help="destination port")] = None,
             rate: Annotated[float | None, typer.Option(
                 help="rate cap in Mbit/s on src -> dst (checked against every link)")] = None,
             reverse_rate: Annotated[float | None, typer.Option(
                 help="rate cap in Mbit/s on the replies, dst -> src")] = None,
             both: Annotated[bool, typer.Option(
                 "--both", help="cap both directions at --rate")] = False,
             name: NameOpt = None) -> None:
    """Install a path for one flow (its replies take the path back) and optionally rate caps
    per direction; prints the flow id. A second flow with the same match is refused."""
    if both and (rate is None or reverse_rate is not None):
        raise typer.BadParameter("--both needs --rate (and no --reverse-rate)")
    client = _flow_client(name)
    nodes = path.split(",") if path else client.default_path(src, dst)
    spec = api.FlowSpec(src=src, dst=dst, path=tuple(n.strip() for n in nodes), proto=proto,
                        sport=sport, dport=dport, rate_mbit=rate,
                        reverse_rate_mbit=rate if both else reverse_rate)
    (added,) = client.add([spec])
    print(added.id)


@flow_app.command("ls")
def flow_ls(name: NameOpt = None, as_json: JsonOpt = False) -> None:
    """Installed flows with the bytes and packets each switch on the path forwarded."""
    flows = _flow_client(name).list()
    if as_json:
        print(json.dumps(flows, indent=1))
        return
    t = Table("id", "match", "path", "rate Mbit/s\nfwd / rev", "bytes per hop\nfwd / rev",
              "state")
    for f in flows:
        match = f"{f['proto']} {f['src']}:{f['sport'] or '*'} -> {f['dst']}:{f['dport'] or '*'}"
        hops = " ".join(f"{h['node']}={h['bytes']}/{h.get('reverse_bytes', 0)}"
                        for h in f["hops"])
        rates = f"{f['rate_mbit'] or '-'} / {f.get('reverse_rate_mbit') or '-'}"
        state = f.get("state", "ok")
        t.add_row(str(f["id"]), match, ",".join(f["path"]), rates, hops,
                  state if state == "ok" else f"[red]{state.upper()}[/] (a link is down)")
    out.print(t)


@flow_app.command("rm")
def flow_rm(ids: Annotated[list[int] | None, typer.Argument(help="flow ids")] = None,
            all_: Annotated[bool, typer.Option("--all", help="remove every flow")] = False,
            name: NameOpt = None) -> None:
    """Remove flows by id, or all of them."""
    client = _flow_client(name)
    if all_:
        removed = client.remove_all()
    elif ids:
        removed = client.remove(ids)
    else:
        raise typer.BadParameter("give flow ids or --all")
    out.print(f"removed {len(removed)} flow(s)")


RecipesOpt = Annotated[list[str] | None, typer.Option(
    "--recipes", help="also look for recipes in DIR (or set TESTBED_RECIPES=DIR:DIR)")]


def _recipe_dirs(dirs: list[str] | None) -> None:
    import os

    if dirs:
        os.environ["TESTBED_RECIPES"] = ":".join(
            [*dirs, *filter(None, os.environ.get("TESTBED_RECIPES", "").split(":"))])


@image_app.command("build")
def image_build(image: Annotated[str, typer.Argument(help="recipe under images/")] = "edge-node",
                force: Annotated[bool, typer.Option(help="rebuild even if up to date")] = False,
                recipes: RecipesOpt = None) -> None:
    """Build a node image from images/NAME or a recipe directory of your own."""
    _recipe_dirs(recipes)
    with err.status("building") as st:
        tag = api.build_image(image, force=force,
                              progress=lambda s: st.update(f"[bold]image[/]: {s}"))
    out.print(f"[green]{tag} is ready[/]")


@image_app.command("ls")
def image_ls(recipes: RecipesOpt = None, as_json: JsonOpt = False) -> None:
    """Recipes and the state of their images (ready, stale, missing), and foreign images
    running testbeds use."""
    _recipe_dirs(recipes)
    found = api.images()
    if as_json:
        print(json.dumps(found, indent=1))
        return
    t = Table("image", "state", "base", "python", "recipe dir", "used by")
    for im in found:
        t.add_row(im["recipe"], im["state"], im["base"], " ".join(im["python"]), im["dir"],
                  " ".join(im["used_by"]) or "-")
    out.print(t)


@node_app.command("set")
def node_set(node: Annotated[str, typer.Argument(help="node name")],
             cpu: Annotated[float | None, typer.Option(help="CPU limit in cores")] = None,
             memory: Annotated[str | None, typer.Option(help='memory limit: MB or "1GB"')] = None,
             name: NameOpt = None) -> None:
    """Change a running node's CPU and memory limits (containers and host nodes)."""
    from testbed.units import parse_size_bytes

    try:
        plain = memory.replace(".", "", 1).isdigit() if memory else False
        mb = (parse_size_bytes(float(memory) if plain else memory, plain_unit="mb") // 1_000_000
              if memory else None)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--memory") from None
    info = api.set_node(name, node, cpu, mb)
    out.print(f"{node}: cpu {info['cpu'] or '-'} cores, memory {info['memory_mb'] or '-'} MB")


@link_app.command("set")
def link_set(a: Annotated[str, typer.Argument(help="one end")],
             b: Annotated[str, typer.Argument(help="the other end")],
             bw: Annotated[str | None, typer.Option(help='rate: Mbit/s or "5Mbit"')] = None,
             delay: Annotated[str | None, typer.Option(help='ms or "10ms" (netem)')] = None,
             jitter: Annotated[str | None, typer.Option(help='ms or "2ms" (netem)')] = None,
             loss: Annotated[str | None, typer.Option(help='% or "0.5%" (netem)')] = None,
             direction: Annotated[str, typer.Option(
                 "--dir", help="both, forward (A->B) or reverse (B->A)")] = "both",
             name: NameOpt = None) -> None:
    """Change only what is given on link A-B, in place (no qdisc rebuilt)."""
    from testbed.units import parse_percent, parse_rate_mbit, parse_time_ms

    try:
        values = {"bw": parse_rate_mbit(_number(bw)) if bw is not None else None,
                  "delay": parse_time_ms(_number(delay)) if delay is not None else None,
                  "jitter": parse_time_ms(_number(jitter)) if jitter is not None else None,
                  "loss": parse_percent(_number(loss)) if loss is not None else None}
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    for d in api.set_link(name, a, b, direction=direction, **values):
        out.print(f"{d['link'][0]} -> {d['link'][1]}: {_shape_text(d)}")


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _shape_text(d: dict) -> str:
    parts = [f"{d['bw_mbit']:g} Mbit/s" if d.get("bw_mbit") else "unshaped"]
    if d.get("leaf") == "netem":
        parts.append(f"delay {d['delay_ms']:g} ms, jitter {d['jitter_ms']:g} ms, "
                     f"loss {d['loss_pct']:.3g}%")
    return ", ".join(parts)


@link_app.command("down")
def link_down(a: Annotated[str, typer.Argument(help="one end")],
              b: Annotated[str, typer.Argument(help="the other end")],
              name: NameOpt = None) -> None:
    """Take link A-B down both ways (kept, shaping included); routes go around it."""
    api.set_link_state(name, a, b, up=False)
    out.print(f"{a}-{b} is down")


@link_app.command("up")
def link_up(a: Annotated[str, typer.Argument(help="one end")],
            b: Annotated[str, typer.Argument(help="the other end")],
            name: NameOpt = None) -> None:
    """Bring link A-B back up as it was."""
    api.set_link_state(name, a, b, up=True)
    out.print(f"{a}-{b} is up")


@link_app.command("ls")
def link_ls(name: NameOpt = None, as_json: JsonOpt = False) -> None:
    """Every link's state and, per direction, the shaping the kernel holds now."""
    found = api.links(name)
    if as_json:
        print(json.dumps(found, indent=1))
        return
    t = Table("link", "state", "direction", "shaping (read from the kernel)")
    for lk in found:
        for i, d in enumerate(lk["directions"]):
            t.add_row("-".join(lk["between"]) if i == 0 else "", lk["state"] if i == 0 else "",
                      f"{d['link'][0]} -> {d['link'][1]}", _shape_text(d))
    out.print(t)


@node_app.command("stop")
def node_stop(node: Annotated[str, typer.Argument(help="node name")],
              name: NameOpt = None) -> None:
    """Crash a node: its processes killed (a container killed), its links down."""
    done = api.stop_node(name, node)
    out.print(f"{node} stopped: {done['killed']} process(es)/container killed, "
              f"{done['links_down']} link(s) down")


@node_app.command("start")
def node_start(node: Annotated[str, typer.Argument(help="node name")],
               name: NameOpt = None) -> None:
    """Bring a stopped node back (a container restarted and wired in), its links up."""
    done = api.start_node(name, node)
    out.print(f"{node} started after {done['down_s']:.1f} s: {done['links_up']} link(s) up")


@node_app.command("reconnect")
def node_reconnect(node: Annotated[str, typer.Argument(help="node name")],
                   name: NameOpt = None) -> None:
    """Wire a container restarted behind the testbed's back (`docker restart`) into the
    fabric again; `status` says when one needs it."""
    fab = api.reconnect(name, node)
    out.print(f"{node} is connected: {fab['pairs_proved']} node pairs proved")


@node_app.command("stats")
def node_stats(node: Annotated[str, typer.Argument(help="a device node")],
               interval: Annotated[float, typer.Option(help="seconds between samples")] = 1.0,
               count: Annotated[int, typer.Option(help="samples to take")] = 5,
               csv: Annotated[str | None, typer.Option(help="also write them to this CSV")] = None,
               name: NameOpt = None) -> None:
    """Sample a device's CPU, memory and tegrastats (GPU, power) on the testbed's clock."""
    import time

    import pandas as pd

    c = api.node_stats(name, node, interval, count)
    try:
        out.print(f"clock offset {c.offset.offset_s * 1000:+.2f} ms "
                  f"(+-{c.offset.uncertainty_s * 1000:.2f} ms)")
        while len(c.records) < count:
            time.sleep(0.1)
        rows = c.stop()
    finally:
        c.session.close()
    df = pd.DataFrame(rows)
    out.print(df.drop(columns=["node"], errors="ignore").to_string(index=False))
    if csv:
        df.to_csv(csv, index=False)


def _terminated(signum: int, frame) -> None:
    """SIGTERM (`kill`, `timeout`, a batch system's stop) ends the command the way Ctrl-C ends
    a run, but for good: the clean-up code runs (a campaign removes its trial's testbed, a run
    writes what it recorded) instead of the process vanishing with everything still up."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the clean-up
    raise SystemExit(128 + signum)


def main() -> None:
    """Run the CLI; user errors print one line and exit 2, failures exit 1."""
    signal.signal(signal.SIGTERM, _terminated)
    try:
        app()  # standalone: click reports usage errors itself (exit 2)
    except TestbedError as e:
        err.print(f"[red]error:[/] {escape(str(e))}", highlight=False)
        sys.exit(e.exit_code)
    except PermissionError as e:
        err.print(f"[red]error:[/] {escape(str(e))}: the testbed needs root (namespaces, OVS, "
                  "cgroups); run it as root, as `make setup` does", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
