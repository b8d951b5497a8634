"""The testbed from Python instead of the command line: bring a network up, run commands in
its nodes, steer a flow, run an experiment with a scheduler, read the results, take it down.

    sudo .venv/bin/python examples/api_script.py [--keep]

Every call is in testbed.api (the CLI calls the same functions)."""

import sys
import tempfile
from pathlib import Path

from testbed import api

TOPOLOGY = """
name: api-example
nodes:
  camera: {cpu: 0.5}
  relay: {}
  server: {kind: docker, cpu: 1}      # the edge-node image: python3, torch, the workloads
links:
  - {between: [camera, relay], bw: 20}
  - {between: [relay, server], bw: 5}    # add delay: 2ms where the kernel has netem
"""

JOBS = """
jobs:
  - name: detect
    source: camera
    input: 100kB
    duration: 6s
    tasks:
      decode: {work: 0.2, memory: 128MB}
      infer: {work: 1.0, memory: 256MB, after: {decode: 50kB}}
"""


def main(keep: bool = False) -> None:
    work = Path(tempfile.mkdtemp(prefix="api-example-"))
    (work / "topology.yaml").write_text(TOPOLOGY)
    (work / "jobs.yaml").write_text(JOBS)
    ledger = api.up(work / "topology.yaml")  # returns once every link and route is proved
    try:
        # 1. a command in a node; nodes know each other by name
        ping = api.run_in_node(ledger.name, "camera", ["ping", "-c", "2", "server"], timeout=30)
        print(ping.stdout.splitlines()[-1])

        # 2. steer one flow: camera -> server on TCP port 5001 via relay, capped at 2 Mbit/s
        (flow,) = api.flows(ledger.name).add([api.FlowSpec(
            src="camera", dst="server", path=("camera", "relay", "server"), dport=5001,
            rate_mbit=2)])
        print(f"flow {flow.id} installed along {'-'.join(flow.path)}")
        api.flows(ledger.name).remove([flow.id])

        # 3. an experiment: the scheduler places tasks and plans paths and rates, the network
        #    enforces them, real processes move real bytes; measured beside predicted
        jobs = api.experiment(ledger.name, work / "jobs.yaml",
                              api.RunOptions(scheduler="otfa", out_dir=work / "run", seed=1))
        for job in jobs.itertuples():
            print(f"{job.job}: {job.status}, {job.throughput_measured_items_s:.2f} items/s "
                  f"measured vs {job.throughput_predicted_items_s:.2f} predicted, "
                  f"placement {job.placement}")
        print(f"traces in {work / 'run'}")
    finally:
        if not keep:
            api.down(ledger.name)


if __name__ == "__main__":
    main(keep="--keep" in sys.argv)
