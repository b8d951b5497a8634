"""The requests kind: requests arriving at source edges, dispatched each period to an edge
that runs the service (CoRaiS and the offloading papers)."""
