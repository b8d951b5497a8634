"""Schedulers from outside the package: an installed package's entry point, `--plugin` with a
module file, and a campaign's `plugins:` list, each used through the real `testbed` command."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "plugin-scheduler"
TOPO = ROOT / "topologies" / "ents-mesh-10.yaml"
JOBS = ROOT / "workloads" / "attr-recognition.yaml"

PLUGIN_FILE = '''
from testbed.schedulers import register
from testbed.schedulers.online import whole_job


def fewest_nodes_first(view, running, waiting, now=0.0):
    return whole_job(view, running, waiting, now, "first-fit", lambda cpu, mem: 0.0)


register("first-fit", fewest_nodes_first, "every job on the first node it fits")
'''


def run_cli(*args: str, env: dict | None = None, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "testbed", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """The example package installed by pip into a directory of its own (not the venv), the
    way a user's package would be; PYTHONPATH makes its entry point visible."""
    site = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index",
                    "--no-build-isolation", "--no-deps", "--target", str(site), str(EXAMPLE)],
                   check=True, capture_output=True, timeout=300)
    return {"PYTHONPATH": str(site)}


def test_an_installed_package_adds_a_scheduler_through_its_entry_point(installed, tmp_path):
    res = run_cli("schedulers", env=installed)
    assert res.returncode == 0 and "mr" in res.stdout and "MostRequestedPriority" in res.stdout
    assert "mr " not in run_cli("schedulers").stdout  # not installed: not listed
    res = run_cli("schedule", str(TOPO), str(JOBS), "-s", "mr", "--json", env=installed)
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    assert plan["scheduler"] == "mr" and plan["placements"]
    # bin packing: each job whole on one node, and fewer nodes than least-requested uses
    lr = json.loads(run_cli("schedule", str(TOPO), str(JOBS), "-s", "lr", "--json").stdout)
    for p in (plan, lr):
        per_job = pd.DataFrame(p["placements"]).groupby("job").node.nunique()
        assert (per_job == 1).all()
    used = {p["node"] for p in plan["placements"]}
    assert len(used) <= len({p["node"] for p in lr["placements"]})


def test_plugin_option_and_campaign_plugins_list(tmp_path):
    (tmp_path / "myplugin.py").write_text(PLUGIN_FILE)
    res = run_cli("schedule", str(TOPO), str(JOBS), "-s", "first-fit",
                  "--plugin", str(tmp_path / "myplugin.py"), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["scheduler"] == "first-fit"
    res = run_cli("schedule", str(TOPO), str(JOBS), "-s", "first-fit")
    assert res.returncode == 2 and "unknown scheduler 'first-fit'" in res.stderr
    res = run_cli("schedulers", "--plugin", "no_such_module_here")
    assert res.returncode == 2 and "no_such_module_here" in res.stderr \
        and "PYTHONPATH" in res.stderr
    camp = tmp_path / "c.yaml"
    camp.write_text(f"""
name: plug
mode: simulated
plugins: [myplugin.py]
topology: {TOPO}
jobs: {JOBS}
grid: {{scheduler: [first-fit, lr]}}
repetitions: 2
""")
    res = run_cli("campaign", str(camp), "-j", "2", "--out", str(tmp_path / "res"),
                  cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    df = pd.read_csv(tmp_path / "res" / "plug" / "trials.csv")
    assert len(df) == 4 and (df.status == "done").all()
    assert set(df.scheduler) == {"first-fit", "lr"}
    camp.write_text(camp.read_text().replace("myplugin.py", "missing.py"))
    res = run_cli("campaign", str(camp), "--dry-run", cwd=tmp_path)
    assert res.returncode == 2 and "plugins[0]" in res.stderr and "missing.py" in res.stderr
