"""os-ken applications the testbed runs (routing, flow API, counters)."""
