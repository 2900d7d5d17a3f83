"""Fixtures shared by several test files.

The helper modules beside the tests (`aggregates`, `inputs`, `clusters`, `timeouts`) are imported by
name: tests/ is put on sys.path here, so that also holds under ``--import-mode=importlib``.

`small_workflow_run`: one complete run of the workflow on tests/configs/config_small.yaml (real Ray,
Dask and Zarr), made once per test session and shared by tests/workflow/test_workflow.py, test_report.py and
test_status.py, so CI pays for it once.  Tests that change it put it back as they found it
(test_workflow's retrain test leaves the same runs, bitwise).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent  # the repository
BIN = Path(sys.executable).parent
SMALL = ROOT / "tests" / "configs" / "config_small.yaml"
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))


def run_snakemake(workdir: Path, *args: str, config: Path = SMALL, timeout: int = 600, check: bool = True):
    """`snakemake -s Snakefile --directory workdir --configfile config *args` as a user runs it."""
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    cmd = ["timeout", "-k", "10", str(timeout), str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(config), *args]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


@pytest.fixture(scope="session")
def small_workflow_run(tmp_path_factory):
    """(workdir, the CompletedProcess, wall seconds) of one complete run on the small config."""
    wd = tmp_path_factory.mktemp("wf")
    t0 = time.time()
    proc = run_snakemake(wd, "--cores", "2")
    return wd, proc, time.time() - t0
