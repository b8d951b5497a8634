"""Campaigns: parameter sweeps x repetitions, run as trials, recorded as tidy CSV, plotted."""
