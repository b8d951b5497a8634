"""DCEI video analytics: camera streams, detection, shared re-identification."""
