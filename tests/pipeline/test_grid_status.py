"""`tfconv status`: the state of every grid point read from a real results folder.

A partial grid trained in-process (2 runs complete, 1 diverged, 1 never trained) gives done, diverged
and missing; a real train_grid step that fails (its data store damaged) turns the missing point into
failed with the step's error; a train_grid log being written (the step's own log format) makes it
running, and one silent for too long makes it failed.  The shared small workflow run
(tests/conftest.py) is read through the installed `tfconv` command with every filter.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tfconv import runner, store
from tfconv.cli import main as cli_main
from tfconv.config import load_workflow
from tfconv.pipeline import steps
from tfconv.pipeline.logs import log, task_log
from tfconv.pipeline.grid_status import STALE_SECONDS, StatusError, apply_filters, grid_status, parse_where
from tfconv.store import Results

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SMALL = ROOT / "tests" / "configs" / "config_small.yaml"

# width 8 converges, width 32 with step 2 diverges within a few epochs (as in tests/workflow/test_faults.py)
PARTIAL = {
    "results": "results",
    "datasets": {"synth": {"kind": "synthetic", "n_samples": 12, "d_s": 4, "d": 8}},
    "experiments": {"grid": {
        "dataset": "synth",
        "grid": {"width": [8, 32], "scaling": ["inv_sqrt", "inv"], "init": ["lecun"], "seed": [0]},
        "train": {"step_size": 2.0, "epochs": 40, "checkpoint_epochs": [0, 40]},
        "analyses": ["loss_per_width"]}},
}
LAST = "width=32_scaling=inv_init=lecun_seed=0"  # never trained


def copy_results(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def partial(tmp_path_factory):
    """A results folder with the first 3 of 4 grid points trained (runner.train_point, no Ray)."""
    import torch

    root = tmp_path_factory.mktemp("status") / "results"
    cfg = dict(PARTIAL, results=str(root))
    wf = load_workflow(cfg)
    exp, res = wf.experiment("grid"), wf.results
    threads = torch.get_num_threads()
    steps.make_dataset(wf, "synth")
    store.ensure_train_store(res.train("grid"), {"points": [p.as_dict() for p in exp.points]})
    for p in exp.points[:3]:
        runner.train_point(exp, p, str(res.data("synth")), str(res.train("grid")), threads=1)
    torch.set_num_threads(threads)
    assert [p.run_id for p in exp.points][3] == LAST
    return root, cfg


def by_id(tables, exp="grid"):
    return {p.run_id: p for p in tables[exp].points}


def test_done_diverged_missing_with_the_run_numbers(partial):
    root, cfg = partial
    pts = by_id(grid_status(root))
    assert [p.state for p in pts.values()] == ["done", "done", "diverged", "missing"]
    st = Results(root).train("grid")
    for rid, p in pts.items():
        if p.state == "missing":
            assert p.loss is None and p.note == ""
            continue
        run = store.read_run(st, rid)
        loss = run["curves"]["loss"]
        assert p.loss == pytest.approx(loss[np.isfinite(loss)][-1], rel=1e-12)
        assert p.lambda_min == pytest.approx(run["attrs"]["kernel"]["lambda_min0"], rel=1e-12)
        kc = run["checkpoint_curves"]["kernel_change"][1:]  # after epoch 0
        if np.isfinite(kc).any():
            assert p.kernel_change == pytest.approx(kc[np.isfinite(kc)][-1], rel=1e-12)
        else:
            assert p.kernel_change is None and p.state == "diverged"
    div = pts["width=32_scaling=inv_sqrt_init=lecun_seed=0"]
    assert div.note == f"diverged at epoch {store.read_run(st, div.run_id)['attrs']['diverged_epoch']}"
    # with the config: the same grid (the config declares the points)
    assert [p.state for p in by_id(grid_status(root, cfg)).values()] == ["done", "done", "diverged", "missing"]


def test_summary_is_one_line_per_experiment_and_full_lists_every_point(partial, capsys):
    root, _ = partial
    assert cli_main(["status", str(root)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    header = lines[0].split()
    row = dict(zip(header, lines[2].split()))
    assert len(lines) == 5 and lines[2].split()[0] == "grid", lines  # header, rule, one experiment, blank, total
    assert (row["points"], row["done"], row["diverged"], row["missing"], row["failed"]) == ("4", "2", "1", "1", "0")
    assert lines[-1].startswith("total: 4 grid points: 2 done, 1 diverged, 0 running, 0 failed, 1 missing")
    assert cli_main(["status", str(root), "--full"]) == 0
    full = capsys.readouterr().out
    states = [ln.split()[4] for ln in full.splitlines() if ln.strip().split()[:1] in (["8"], ["32"])]
    assert states == ["done", "done", "diverged", "missing"]


@pytest.mark.slow
def test_a_failed_train_grid_marks_the_untrained_points_failed(partial, tmp_path, capsys):
    """A real train_grid on a damaged data store: the Ray task that trains the last point fails."""
    root, cfg = partial
    copy = copy_results(root, tmp_path / "results")
    wf = load_workflow(dict(cfg, results=str(copy)))
    x = Results(copy).data("synth") / "X" / "c" / "0" / "0" / "0"  # a chunk of the array X
    x.write_bytes(x.read_bytes()[:-1] + bytes([x.read_bytes()[-1] ^ 0xFF]))  # damage the data store
    with pytest.raises(Exception) as err, task_log(str(wf.results.log("train_grid", "grid"))):
        steps.train_grid(wf, "grid")
    pts = by_id(grid_status(copy))
    assert pts[LAST].state == "failed"
    assert type(err.value).__name__ in pts[LAST].note, pts[LAST].note
    assert [p.state for p in pts.values()][:3] == ["done", "done", "diverged"]
    capsys.readouterr()
    assert cli_main(["status", str(copy), "--failed"]) == 1
    out = capsys.readouterr().out
    assert "1 failed grid point" in out and LAST in out and type(err.value).__name__ in out
    assert cli_main(["status", str(root), "--failed"]) == 0  # the undamaged folder has none
    assert "no failed grid points" in capsys.readouterr().out


def test_running_then_stale(partial, tmp_path):
    root, cfg = partial
    copy = copy_results(root, tmp_path / "results")
    wf = load_workflow(dict(cfg, results=str(copy)))
    with task_log(str(wf.results.log("train_grid", "grid"))):  # the step's own log lines
        log("[train_grid] grid: 4 grid points, 3 already complete, 1 to train")
        log("[ray] starting a local Ray cluster with 2 CPUs")
    pts = by_id(grid_status(copy))
    assert pts[LAST].state == "running" and pts[LAST].note == "queued or training"
    later = by_id(grid_status(copy, now=time.time() + STALE_SECONDS + 5))
    assert later[LAST].state == "failed" and "killed?" in later[LAST].note
    # a manifest written after the log: the step finished, the point is missing (deleted since)
    store.write_json_atomic(wf.results.train_manifest("grid"), {"experiment": "grid"})
    assert by_id(grid_status(copy))[LAST].state == "missing"


def test_filters(partial):
    root, _ = partial
    t = grid_status(root)
    assert [p.run_id for p in apply_filters(t, parse_where(["width=8"]))["grid"].points] == [
        "width=8_scaling=inv_sqrt_init=lecun_seed=0", "width=8_scaling=inv_init=lecun_seed=0"]
    assert len(apply_filters(t, parse_where(["width=8,32", "scaling=inv"]))["grid"].points) == 2
    assert [p.state for p in apply_filters(t, parse_where(["state=diverged"]))["grid"].points] == ["diverged"]
    assert apply_filters(t, parse_where(["seed=1"]))["grid"].points == []
    with pytest.raises(StatusError, match="--where depth: unknown key; allowed: n_samples, width"):
        parse_where(["depth=2"])
    with pytest.raises(StatusError, match="unknown state; allowed: done, diverged, running, failed, missing"):
        parse_where(["state=finished"])
    with pytest.raises(StatusError, match="expected key=value"):
        parse_where(["width"])
    with pytest.raises(StatusError, match="--experiment nope: not in"):
        grid_status(root, experiments=["nope"])
    with pytest.raises(StatusError, match="does not exist"):
        grid_status(root / "nowhere")


def tfconv(*args):
    return subprocess.run([str(BIN / "tfconv"), *args], capture_output=True, text=True, check=False)


@pytest.mark.slow
def test_cli_on_the_small_workflow_run(small_workflow_run):
    wd, _, _ = small_workflow_run
    results = wd / "results"
    summary = tfconv("status", str(results))  # the default: one line per experiment
    assert summary.returncode == 0, summary.stderr
    lines = summary.stdout.strip().splitlines()
    assert lines[0].split()[:7] == ["experiment", "points", "done", "diverged", "running", "failed", "missing"]
    assert lines[2].split()[:7] == ["grid", "8", "8", "0", "0", "0", "0"] and len(lines) == 5, lines
    assert lines[-1].startswith("total: 8 grid points: 8 done, 0 diverged") and "--full" in lines[-1]
    out = tfconv("status", str(results), "--full")
    assert out.returncode == 0, out.stderr
    print(out.stdout)
    assert "grid: 8 grid points: 8 done, 0 diverged, 0 running, 0 failed, 0 missing" in out.stdout
    assert tfconv("status", str(results), "--runs").stdout == out.stdout
    assert "last train_grid: finished" in out.stdout
    header = next(ln for ln in out.stdout.splitlines() if "lambda_min(K0)" in ln).split()
    assert header[:5] == ["width", "scaling", "init", "seed", "state"]
    rows = [ln.split() for ln in out.stdout.splitlines() if ln.strip().split()[:1] in (["8"], ["32"])]
    assert len(rows) == 8 and all(r[4] == "done" for r in rows)
    f = tfconv("status", str(results), "--width", "8", "--where", "init=ntk", "--json")
    data = json.loads(f.stdout)
    assert sorted(p["run_id"] for p in data["grid"]["points"]) == [
        "width=8_scaling=inv_init=ntk_seed=0", "width=8_scaling=inv_sqrt_init=ntk_seed=0"]
    assert all(p["loss"] > 0 and p["lambda_min"] > 0 for p in data["grid"]["points"])
    cfg = tfconv("status", str(results), "--config", str(SMALL), "--experiment", "grid")
    assert cfg.returncode == 0 and "8 done" in cfg.stdout
    bad = tfconv("status", str(results), "--where", "depth=3")
    assert bad.returncode == 2 and "--where depth: unknown key" in bad.stderr
    assert tfconv("status", str(results), "--failed").returncode == 0


def test_version_names_every_library_and_the_revision(capsys):
    with pytest.raises(SystemExit) as ex:
        cli_main(["--version"])
    assert ex.value.code == 0
    out = capsys.readouterr().out.splitlines()
    names = [ln.split()[0] for ln in out]
    assert names == ["tfconv", "torch", "ray", "dask", "distributed", "zarr", "xarray", "snakemake", "git"]
    import tfconv as pkg

    assert out[0] == f"tfconv {pkg.__version__}"
    assert "(not installed)" not in "\n".join(out)
    rev = out[-1].split()[-1]
    assert rev != "unknown", out[-1]
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True, check=False).stdout.strip()
    assert rev.split("-")[0] == head, (rev, head)
