"""The library surface the CLI and Python users call: a testbed's life (up, status, exec,
down), offline scheduling and simulation, and the host's capabilities. It never prints;
progress goes through a callback.

    from testbed import api
    ledger = api.up("topologies/demo.yaml")
    api.run(ledger.name, "e1", ["ping", "-c", "1", "10.0.0.2"])
    api.down(ledger.name)
"""

from __future__ import annotations

from pathlib import Path

from testbed.errors import TestbedError
from testbed.lifecycle import (  # noqa: F401 (re-exported: this is the users' surface)
    DROP_PRIVILEGES,
    UNPRIVILEGED_UID,
    down,
    down_all,
    exec_in_node,
    in_node,
    load_topology,
    popen,
    resolve,
    run,
    set_node,
    status,
    up,
    workload_command,
)
from testbed.net.ledger import known_testbeds  # noqa: F401 (re-exported)
from testbed.net.probe import probe
from testbed.schedulers.offline import schedule, simulate  # noqa: F401
from testbed.topology import load


def doctor(topology: str | Path | None = None, accept_new_host_keys: bool = False) -> dict:
    """This host's capabilities; with a topology, also what each of its devices offers/lacks."""
    out = probe().to_dict()
    if topology is not None:
        from testbed.devices.attach import probe as probe_device
        from testbed.devices.ssh import Endpoint, Session

        out["devices"] = {}
        for n in load(topology).nodes:
            if n.kind != "device":
                continue
            try:
                with Session(Endpoint.of(n.name, n.ssh), accept_new_host_keys,
                             retry_for_s=3) as s:
                    rep = probe_device(s)
                out["devices"][n.name] = {"reachable": True, "missing": list(rep.missing),
                                          **{k: v for k, v in rep.facts.items()}}
            except TestbedError as e:
                out["devices"][n.name] = {"reachable": False, "missing": [str(e)]}
    return out
