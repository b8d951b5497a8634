"""The streams workload kind: DAG jobs processing streams of items (ENTS, DCEI's cameras)."""
