"""Kubernetes' MostRequestedPriority as a testbed scheduler: each job goes whole onto the node
that is busiest after placing it (bin packing: fewer nodes in use). Installed with pip, it
appears in `testbed schedulers` through the `testbed.schedulers` entry point."""

from testbed.schedulers.online import whole_job


def most_requested(view, running, waiting, now=0.0):
    """MostRequestedPriority: the whole job on the node left busiest (packs nodes)."""
    return whole_job(view, running, waiting, now, "mr",
                     lambda cpu, mem: (min(cpu, 1) + mem) / 2)


most_requested.kind = "streams"  # the workload kind it plans
