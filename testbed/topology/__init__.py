"""Topology: the YAML format, its validation and generators, and the immutable model."""

from testbed.topology.loader import load, loads
from testbed.topology.model import Link, LinkShape, Node, Topology

__all__ = ["Link", "LinkShape", "Node", "Topology", "load", "loads"]
