"""Hybrid edge testbed: YAML topologies become shaped, SDN-routed emulated edge networks."""

__version__ = "0.1.0"
