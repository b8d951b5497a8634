"""The shipped examples run as a user would run them."""

import subprocess
import sys

import pytest

from testbed import api
from tests.conftest import ROOT, needs_root


@needs_root
@pytest.mark.emulation
@pytest.mark.slow
def test_the_python_api_example_runs_end_to_end(edge_image):
    try:
        res = subprocess.run([sys.executable, str(ROOT / "examples" / "api_script.py")],
                             capture_output=True, text=True, timeout=300, cwd=ROOT)
    finally:
        if "api-example" in api.known_testbeds():  # only if the script died before down
            api.down("api-example")
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert "0% packet loss" in lines[0] or "min/avg/max" in lines[0], lines
    assert any(line.startswith("flow 1 installed along camera-relay-server") for line in lines)
    assert any(line.startswith("detect: done,") for line in lines), lines
    assert "api-example" not in api.known_testbeds()
