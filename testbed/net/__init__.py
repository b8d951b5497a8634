"""Emulation: namespaces, veths, OVS switches, shaping, cgroups, the controller process, cleanup."""
