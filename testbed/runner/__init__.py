"""The streams executor: enforce and execute a Plan on a running testbed, trace it."""
