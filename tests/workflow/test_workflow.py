"""The workflow end to end on the small test config, with a real local Ray cluster (train_grid) and
a real dask.distributed LocalCluster (assemble_gram), writing real Zarr stores."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from inputs import run_member  # noqa: E402 (tests/ is on sys.path)
from tfconv import store
from tfconv.store import Results

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SMALL = ROOT / "tests" / "configs" / "config_small.yaml"

pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str, config: Path = SMALL, timeout: int = 600, check: bool = True):
    # auth off for the Ray clusters of these subprocesses (set here, not in the README's or CI's
    # command); the default token mode is tested in tests/cluster/test_loopback.py
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    cmd = ["timeout", "-k", "10", str(timeout), str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(config), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def declared_targets(workdir: Path, config: Path):
    """Every output the config asks for, where the results layout (tfconv.store.Results) puts it."""
    from tfconv.config import load_workflow

    cfg = yaml.safe_load(config.read_text())
    wf = load_workflow(dict(cfg, results=str(workdir / cfg.get("results", "results"))))
    res = wf.results
    out = [res.claims, res.slopes, res.verify_report]
    for e, exp in wf.experiments.items():
        out += [res.train_manifest(e), res.aggregate(e)] + ([res.gram_manifest(e)] if exp.gram else [])
        for a in exp.analyses:
            out += [res.figure(e, a, kind) for kind in ("png", "csv", "slopes", "finding")]
    return out


@pytest.fixture(scope="module")
def finished_run(small_workflow_run):
    """One complete run of the workflow on the small config (tests/conftest.py: made once per session,
    shared with tests/workflow/test_report.py and tests/pipeline/test_grid_status.py)."""
    return small_workflow_run


def test_workflow_produces_every_declared_output(finished_run):
    wd, proc, seconds = finished_run
    missing = [str(p) for p in declared_targets(wd, SMALL) if not p.exists()]
    assert not missing, f"missing outputs: {missing}"
    res = Results(wd / "results")
    for png in (p for p in declared_targets(wd, SMALL) if p.suffix == ".png"):
        assert png.stat().st_size > 5000, f"{png} looks empty"
    assert res.verify_report.read_text().startswith("tfconv verify results: OK (checked 1 datasets, 8 runs")
    # progress is shown while training and assembling
    log = res.log("train_grid", "grid").read_text()
    assert "[train_grid] 8/8" in log and "eta=" in log
    print(f"workflow wall time on the small config: {seconds:.0f}s")


def test_second_run_is_a_noop(finished_run):
    wd, _, _ = finished_run
    proc = snakemake(wd, "--cores", "2", "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_removing_one_point_retrains_only_that_point(finished_run):
    wd, _, _ = finished_run
    res = Results(wd / "results")
    rid = "width=8_scaling=inv_init=ntk_seed=0"
    ts = res.train("grid")
    before = {r: run_member(store.run_path(ts, r), "loss/c/0") for r in store.list_runs(ts)}
    assert len(before) == 8
    store.run_path(ts, rid).unlink()
    # the rule reruns (as a user would after deleting a point); the driver trains only what is missing
    snakemake(wd, "--cores", "2", "--forcerun", "train_grid")
    manifest = json.loads(res.train_manifest("grid").read_text())
    assert manifest["trained_now"] == [rid]
    after = {r: run_member(store.run_path(ts, r), "loss/c/0") for r in store.list_runs(ts)}
    assert after == before  # the retrained point is bitwise identical, the others untouched


def test_gram_in_zarr_equals_direct_computation(finished_run):
    import torch

    from tfconv import runner, store
    from tfconv.config import load_workflow
    from tfconv.core.ntk import ntk_matrix, params_from_numpy

    wd, _, _ = finished_run
    wf = load_workflow(dict(yaml.safe_load(SMALL.read_text()), results=str(wd / "results")))
    res, exp = wf.results, wf.experiment("grid")
    ds = store.read_dataset(res.data("synth"))
    for rid, point in [("width=32_scaling=inv_sqrt_init=lecun_seed=0", dict(width=32, scaling="inv_sqrt", init="lecun", seed=0)),
                       ("width=8_scaling=inv_init=ntk_seed=0", dict(width=8, scaling="inv", init="ntk", seed=0))]:
        run = runner.load_run(res.train("grid"), rid)  # every checkpoint, the re-derived initialisation too
        assert exp.point(point).run_id == rid
        spec = exp.point(point).spec(ds)
        for epoch in (0, 30):
            K_zarr, ev = store.read_gram(res.gram("grid"), rid, epoch)
            params = params_from_numpy(run["checkpoints"][epoch], dtype=torch.float64)
            K_direct = ntk_matrix(params, spec.__class__(**{**spec.to_dict(), "dtype": "float64"}), ds.X, engine="exact")
            # float32 parameters/engine in the workflow vs a float64 exact reference: 1e-4 relative
            np.testing.assert_allclose(K_zarr, K_direct, rtol=1e-4, atol=1e-6 * np.abs(K_direct).max())
            np.testing.assert_allclose(ev, np.linalg.eigvalsh(K_zarr), rtol=1e-10, atol=1e-12)


def test_report_and_lint(finished_run):
    wd, _, _ = finished_run
    snakemake(wd, "--report", str(wd / "report.html"))
    html = (wd / "report.html").read_text(errors="replace")
    assert len(html) > 50_000
    lint = snakemake(wd, "--lint", check=False)
    assert lint.returncode == 0, f"snakemake --lint reported:\n{lint.stdout}\n{lint.stderr}"


def test_verify_cli_detects_a_missing_run(finished_run, tmp_path):
    wd, _, _ = finished_run
    copy = tmp_path / "results"
    shutil.copytree(wd / "results", copy)
    ok = subprocess.run([str(BIN / "tfconv"), "verify", str(copy)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    store.run_path(Results(copy).train("grid"), "width=32_scaling=inv_init=lecun_seed=0").unlink()
    bad = subprocess.run([str(BIN / "tfconv"), "verify", str(copy)], capture_output=True, text=True)
    assert bad.returncode == 1
    assert "width=32_scaling=inv_init=lecun_seed=0 is missing" in bad.stdout


def test_compare_results_script_finds_a_changed_value(finished_run, tmp_path):
    """scripts/compare_results.py (how a refactoring shows the outputs unchanged) reports identical
    folders as identical and a single changed Gram entry as a difference."""
    import zarr

    wd, _, _ = finished_run
    script = [str(BIN / "python"), str(ROOT / "scripts" / "compare_results.py")]
    copy = tmp_path / "results"
    shutil.copytree(wd / "results", copy)
    same = subprocess.run(script + [str(wd / "results"), str(copy)], capture_output=True, text=True)
    assert same.returncode == 0 and "IDENTICAL" in same.stdout, same.stdout + same.stderr
    gram = store.gram_path(Results(copy).gram("grid"), "width=8_scaling=inv_init=ntk_seed=0", 0)
    K = zarr.open_array(str(gram / "K"), mode="a")
    K[1, 2] = float(K[1, 2]) * (1 + 1e-15) + 1e-300
    diff = subprocess.run(script + [str(wd / "results"), str(copy)], capture_output=True, text=True)
    assert diff.returncode == 1 and "epoch=0/K: values differ" in diff.stdout, diff.stdout


def test_damage_then_verify_repair_then_rerun_restores_identical_results(finished_run, tmp_path):
    """The operator's path after damage: `tfconv verify --repair` removes what is damaged (a flipped
    bit in a Gram, a changed loss in a run, an edited claims table), the next `snakemake` recomputes
    exactly that, and the results equal the undisturbed ones bitwise (scripts/compare_results.py)."""
    import zarr

    from inputs import repack_run, unpack_run

    wd, _, _ = finished_run
    copy = tmp_path / "wf"
    shutil.copytree(wd, copy, symlinks=True)
    res = Results(copy / "results")
    res.owner_file.unlink()  # hand the copied folder to the copy's workflow (as the message says)
    rid = "width=8_scaling=inv_init=ntk_seed=0"
    K = zarr.open_array(str(store.gram_path(res.gram("grid"), rid, 0) / "K"), mode="a")
    v = np.array([K[0, 0]])
    v.view(np.uint8)[0] ^= 0x01
    K[0, 0] = v[0]
    other = "width=32_scaling=inv_init=lecun_seed=0"
    folder = unpack_run(store.run_path(res.train("grid"), other), tmp_path / "run")
    loss = zarr.open_array(str(folder / "loss"), mode="a")
    loss[4] = float(loss[4]) * 0.999
    repack_run(folder, store.run_path(res.train("grid"), other))
    claims = res.claims
    claims.write_text(claims.read_text().replace("not measurable", "consistent", 1))
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    bad = subprocess.run([str(BIN / "tfconv"), "verify", "results", "--repair"], cwd=copy, capture_output=True,
                         text=True, env=env)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    for what in (rid, other, "claims.csv"):
        assert what in bad.stdout, (what, bad.stdout)
    proc = snakemake(copy, "--cores", "2")
    manifest = json.loads(res.train_manifest("grid").read_text())
    assert manifest["trained_now"] == [other]  # only the damaged run was trained again
    ok = subprocess.run([str(BIN / "tfconv"), "verify", "results"], cwd=copy, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + proc.stdout[-2000:]
    same = subprocess.run([str(BIN / "python"), str(ROOT / "scripts" / "compare_results.py"), str(wd / "results"),
                           str(res.root)], capture_output=True, text=True)
    assert same.returncode == 0 and "IDENTICAL" in same.stdout, same.stdout + same.stderr


REALDATA = ROOT / "tests" / "configs" / "config_realdata.yaml"


def test_real_data_experiments_end_to_end(tmp_path):
    """vit_mnist (shipped MNIST) and text_assumption (shipped reviews) through the whole workflow."""
    import xarray as xr

    snakemake(tmp_path, "--cores", "2", config=REALDATA)
    missing = [str(p) for p in declared_targets(tmp_path, REALDATA) if not p.exists()]
    assert not missing, f"missing outputs: {missing}"
    res = Results(tmp_path / "results")
    vit = xr.open_zarr(res.aggregate("vit_mnist")).load()
    acc = vit["test_accuracy"].sel(epoch=12)
    assert acc.shape == (2, 2, 2, 1) and float(acc.min()) >= 0.0 and float(acc.max()) <= 1.0
    assert np.all(np.isfinite(vit["loss"].values))
    txt = xr.open_zarr(res.aggregate("text_assumption")).load()
    lam = txt["lambda_min"].sel(checkpoint_epoch=0)
    assert lam.dims == ("n_samples", "width", "scaling", "init", "seed")
    assert np.all(lam.values > 0), "the NTK at init of distinct reviews must be positive definite"
    assert "data_kernel_lambda_min" in txt and txt["data_kernel_lambda_min"].dims == ("n_samples",)


ITERATIVE = ROOT / "tests" / "configs" / "config_iterative.yaml"


def test_iterative_spectra_end_to_end(tmp_path, capsys, monkeypatch):
    """The workflow with every Gram (N = 60) above gram.spectrum_dense_max = 40 and SLQ vectors: each
    Gram stores lambda_min by shift-invert and lambda_max by Lanczos with residuals, lambda_min's
    Cholesky certificate, no eigenvalues, an SLQ density; `tfconv verify` passes; the spectrum
    figure draws the SLQ density of K_0."""
    import pandas as pd
    import xarray as xr

    from tfconv import cli
    from tfconv.config import load_workflow

    snakemake(tmp_path, "--cores", "2", config=ITERATIVE)
    missing = [str(p) for p in declared_targets(tmp_path, ITERATIVE) if not p.exists()]
    assert not missing, f"missing outputs: {missing}"
    cfg = yaml.safe_load(ITERATIVE.read_text())
    wf = load_workflow(dict(cfg, results=str(tmp_path / "results")))
    res, exp = wf.results, wf.experiment("iterative")
    gs = res.gram("iterative")
    eps = np.finfo(float).eps
    for p in exp.points:
        g = store.open_gram(gs, p.run_id, 0, mode="r")
        n = g["K"].shape[0]
        assert n == 60 > cfg["gram"]["spectrum_dense_max"]
        assert "eigenvalues" not in g and g.attrs["spectrum_arrays"] == ["extremes", "slq_nodes", "slq_weights"]
        sp = store.read_spectrum(gs, p.run_id, 0)
        rec = sp["records"]
        assert sp["eigenvalues"] is None and rec["computed"] == "iterative" and rec["dense_max"] == 40
        assert (rec["lambda_min"]["method"], rec["lambda_max"]["method"]) == ("shift_invert", "lanczos")
        dense = np.linalg.eigvalsh(np.asarray(g["K"][...]))
        # Tolerance: for a symmetric K some eigenvalue lies within the measured residual |Kv - lambda v|
        # of each stored value, and float64 eigvalsh is exact only for a matrix within about
        # n eps |K|_2 of K; so each stored extreme is within residual + n eps lambda_max of the true
        # extreme (here ~1e-9 absolute against lambda_min ~ 1e-2: a wrong, interior eigenvalue would
        # be off by the spectral gap, orders of magnitude more).
        for k, true in (("lambda_min", dense[0]), ("lambda_max", dense[-1])):
            r = rec[k]
            assert r["iterations"] >= 1 and r["residual"] is not None and 0 <= r["residual"] < 1e-6 * dense[-1], (k, r)
            assert r["value"] == sp[k]
            assert abs(r["value"] - true) <= r["residual"] + n * eps * dense[-1], (k, r["value"], true)
        lo, hi = rec["lambda_min"]["certificate"]  # Cholesky trials: lo < lambda_min <= hi
        assert np.isfinite([lo, hi]).all() and lo < dense[0] <= hi and lo < sp["lambda_min"] <= hi
        nodes, w = sp["slq"]
        assert w.sum() == pytest.approx(1.0) and len(nodes) == 4 * 12
        assert dense[0] * (1 - 1e-9) <= nodes.min() and nodes.max() <= dense[-1] * (1 + 1e-9)  # Ritz values
    assert "OK" in (res.verify_report).read_text()  # the workflow's own verify step
    monkeypatch.chdir(tmp_path)  # where the workflow ran (stores record paths relative to it)
    assert cli.main(["verify", str(res.root)]) == 0, capsys.readouterr().out
    agg = xr.open_zarr(res.aggregate("iterative")).load()
    assert set(np.asarray(agg["spectral_density_method"].values).ravel()) == {"slq"}
    table = pd.read_csv(res.figure("iterative", "spectrum", "csv"))
    dens = table[table["quantity"] == "spectral_density_K0"]
    assert set(dens["width"]) == {8, 16} and (dens["y"] > 0).all()
    finding = res.figure("iterative", "spectrum", "finding").read_text()
    assert "SLQ for width(s) 8, 16" in finding
