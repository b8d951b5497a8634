"""Error types: one root so callers can catch any testbed error; the CLI maps them to exit codes."""

from __future__ import annotations


class TestbedError(Exception):
    """Root of every error the testbed raises on purpose (exit code 1: the operation failed)."""

    __test__ = False  # not a pytest test class
    exit_code = 1


class InputError(TestbedError):
    """The user's input is wrong (exit code 2); nothing was built."""

    exit_code = 2


class TopologyError(InputError):
    """A topology (or job) file is invalid; names the file, the field and the fix."""

    def __init__(self, file: str, field: str, problem: str, fix: str = "") -> None:
        self.file, self.field, self.problem, self.fix = file, field, problem, fix
        where = f"{file}: {field}: " if field else f"{file}: "
        super().__init__(where + problem + (f"; {fix}" if fix else ""))


class CapabilityError(InputError):
    """The topology asks for something this host's kernel or services cannot do."""


class FlowError(InputError):
    """A flow request (path, ports, rate) is invalid for the running topology."""


class NotRunningError(TestbedError):
    """No testbed of that name is up."""


class NetworkError(TestbedError):
    """The kernel, OVS or the controller refused or failed an operation."""
