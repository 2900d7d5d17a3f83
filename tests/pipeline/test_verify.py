"""`tfconv verify` checks content, not only structure: each corruption of a finished results folder is
detected (one line naming the item, exit status 1) and `--repair` removes exactly the damaged items
and the manifests that vouch for them.  (tests/workflow/test_workflow.py shows that the next workflow run then
recomputes them to results equal to an undisturbed run.)"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from inputs import repack_run, trained_results, unpack_run  # noqa: E402 (tests/ is on sys.path)
from tfconv import cli, runner, store
from tfconv.cluster.dask_spectra import finalize_gram
from tfconv.store import Results
from timeouts import hard_timeout  # noqa: E402

R0 = "width=4_scaling=inv_sqrt_init=lecun_seed=0"
R1 = "width=4_scaling=inv_sqrt_init=lecun_seed=1"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A complete results folder made in-process: dataset, two runs, their Grams, the aggregate and the
    tables; and the config file that made it."""
    import torch
    import zarr

    from tfconv.pipeline import steps

    root = tmp_path_factory.mktemp("verify") / "results"
    wf, points = trained_results(root, seeds=[0, 1])
    res, exp = wf.results, wf.experiment("grid")
    # as the workflow records it: relative to the folder the workflow runs in
    zarr.open_group(str(res.train("grid")), mode="a").attrs["dataset_store"] = "results/data/synth.zarr"
    threads = torch.get_num_threads()
    job = runner.GramJob(exp, str(res.data("synth")), str(res.train("grid")), str(res.gram("grid")),
                         runner.GramSettings("structured", block_size=5, chunk_size=5, threads=1))
    for p in points:
        for e in (0, 5):
            grp = store.ensure_gram(str(res.gram("grid")), p.run_id, e, 12, 5)
            for bi, bj in store.upper_blocks(12, 5):
                runner.gram_block(job, p, e, bi, bj)
            finalize_gram(grp)
    torch.set_num_threads(threads)
    store.write_json_atomic(res.train_manifest("grid"), {"experiment": "grid"})
    store.write_json_atomic(res.gram_manifest("grid"), {"experiment": "grid"})
    steps.aggregate(wf, "grid")
    steps.tables(wf)
    cfg = dict(wf.config)
    (root.parent / "config.yaml").write_text(yaml.safe_dump(cfg))
    return root


def _set_attr(path: Path, key, value):
    import zarr

    zarr.open_group(str(path), mode="a").attrs[key] = value


def _damage(kind):
    def act(root: Path):
        import zarr

        res = Results(root)
        ts = res.train("grid")
        run_file, other = store.run_path(ts, R0), store.run_path(ts, R1)
        run = root / "unpacked-run"  # the run's Zarr group, extracted to damage it, then zipped back
        g0 = store.gram_path(res.gram("grid"), R0, 0)
        if kind == "run-missing":
            run_file.unlink()
        elif kind == "runs-swapped":
            tmp = run_file.parent / "tmp-swap"
            run_file.rename(tmp)
            other.rename(run_file)
            tmp.rename(other)
        elif kind == "run-symlink":
            run_file.unlink()
            run_file.symlink_to(other)
        elif kind.startswith("run-") or kind in ("loss-changed", "checkpoint-changed", "other-step-size"):
            unpack_run(run_file, run)
            if kind == "run-nan":
                zarr.open_array(str(run / "loss"), mode="a")[2] = np.nan
            elif kind == "run-unreadable":
                shutil.rmtree(run / "loss")
            elif kind == "loss-changed":
                a = zarr.open_array(str(run / "loss"), mode="a")
                a[3] = float(a[3]) * 0.999
            elif kind == "checkpoint-changed":
                a = zarr.open_array(str(run / "ckpt" / "epoch=5" / "Wh"), mode="a")
                a[0, 0] = float(a[0, 0]) + 1e-3
            elif kind == "other-step-size":  # a run from another config, with its digest consistent
                attrs = json.loads(store.metadata_file(run).read_text())
                attrs["attributes"]["kernel"]["step"] = 0.7
                store.metadata_file(run).write_text(json.dumps(attrs))
            repack_run(run, run_file)
        elif kind == "gram-missing":
            shutil.rmtree(g0)
        elif kind == "gram-incomplete":
            _set_attr(g0, "complete", False)
        elif kind == "gram-K-deleted":
            shutil.rmtree(g0 / "K")
        elif kind == "block-not-done":
            zarr.open_array(str(g0 / "blocks_done"), mode="a")[0, 1] = 0
        elif kind == "gram-nan":
            zarr.open_array(str(g0 / "K"), mode="a")[0, 0] = np.nan
        elif kind == "diagonal-block-bytes":
            K = zarr.open_array(str(g0 / "K"), mode="a")
            v = np.array([K[1, 1]])
            v.view(np.uint8)[0] ^= 0x01  # flip one bit of the lowest byte
            K[1, 1] = v[0]
        elif kind == "symmetric-edit":
            K = zarr.open_array(str(g0 / "K"), mode="a")
            K[2, 7] = K[7, 2] = float(K[2, 7]) * 1.01
        elif kind == "eigenvalues-changed":
            ev = zarr.open_array(str(g0 / "eigenvalues"), mode="a")
            ev[-1] = float(ev[-1]) * 2
        elif kind == "no-eigenvalues":
            shutil.rmtree(g0 / "eigenvalues")
        elif kind == "eigenvalues-flattened":  # digest and trace consistent, the ends impossible
            ev = zarr.open_array(str(g0 / "eigenvalues"), mode="a")
            K = np.asarray(zarr.open_array(str(g0 / "K"), mode="r")[...])
            flat = np.full(ev.shape, np.trace(K) / K.shape[0])
            ev[...] = flat
            _set_attr(g0, "eigenvalues_digest", store.block_digest(flat))
        elif kind == "record-edited":
            attrs = json.loads(store.metadata_file(g0).read_text())
            attrs["attributes"]["spectrum"]["lambda_max"]["value"] *= 1.001
            store.metadata_file(g0).write_text(json.dumps(attrs))
        elif kind == "dataset-modified":
            zarr.open_array(str(res.data("synth") / "X"), mode="a")[0, 0, 0] = 0.5
        elif kind == "trained-on-other-data":
            _set_attr(res.train("grid"), "dataset_sha256", "0" * 64)
        elif kind == "dataset-missing":
            shutil.rmtree(res.data("synth"))
        elif kind == "aggregate-changed":
            a = zarr.open_array(str(res.aggregate("grid") / "loss"), mode="a")
            a[0, 0, 0, 0, 1] = float(a[0, 0, 0, 0, 1]) * 1.5
        elif kind == "claims-edited":
            p = res.claims
            p.write_text(p.read_text().replace("not measurable", "consistent", 1))

    return act


# (corruption, what the report must say, the items --repair must remove)
VERIFY_CASES = [
    ("run-missing", f"run {R0} is missing or incomplete", ["train/grid.json"]),
    ("run-nan", "curve loss has 1 NaN/inf values where none may be", [f"runs/{R0}", "train/grid.json"]),
    ("run-unreadable", "is marked complete but cannot be read", [f"runs/{R0}"]),
    ("loss-changed", "no longer match the digest", [f"runs/{R0}", "train/grid.json"]),
    ("checkpoint-changed", "no longer match the digest", [f"runs/{R0}"]),
    ("runs-swapped", "recorded run id", [f"runs/{R0}", f"runs/{R1}"]),
    ("run-symlink", "is a symbolic link", [f"runs/{R0}"]),
    ("other-step-size", "trained with step_size=0.7 (config: 1.0)", [f"runs/{R0}"]),
    ("gram-missing", f"Gram of {R0} at epoch 0 is missing or incomplete", ["gram/grid.json"]),
    ("gram-incomplete", "at epoch 0 is missing or incomplete", [f"{R0}/epoch=0", "gram/grid.json"]),
    ("gram-K-deleted", "at epoch 0 is missing or incomplete", [f"{R0}/epoch=0"]),
    ("block-not-done", "(0,1) not done", [f"{R0}/epoch=0"]),
    ("gram-nan", "1 non-finite entries", [f"{R0}/epoch=0"]),
    ("diagonal-block-bytes", "block(s) damaged: (0,0) changed", [f"{R0}/epoch=0"]),
    ("symmetric-edit", "changed", [f"{R0}/epoch=0"]),
    ("eigenvalues-changed", "eigenvalues do not match their recorded digest", [f"{R0}/epoch=0"]),
    ("no-eigenvalues", "at epoch 0 is missing or incomplete", [f"{R0}/epoch=0"]),
    ("eigenvalues-flattened", "contradict diag K", [f"{R0}/epoch=0"]),
    ("record-edited", "its spectrum record lambda_max", [f"{R0}/epoch=0"]),
    ("dataset-modified", "does not match the recorded", ["data/synth.zarr"]),
    ("trained-on-other-data", "trained on dataset sha256 0000000000000000", ["train/grid.json"]),
    ("dataset-missing", "its dataset store", ["train/grid.json"]),
    ("aggregate-changed", "no longer match the digest recorded", ["aggregate/grid.zarr"]),
    ("claims-edited", "claims.csv: its content differs", ["tables/claims.csv", "tables/manifest.json"]),
]


@hard_timeout(180)
def test_verify_detects_every_corruption_and_repair_removes_the_damaged_items(results, tmp_path, capsys, monkeypatch):
    cfgfile = str(results.parent / "config.yaml")
    monkeypatch.chdir(results.parent)
    assert cli.main(["verify", str(results), "--config", cfgfile]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "OK (checked" in out and "2 runs" in out and "Gram blocks" in out
    for kind, expected, removed in VERIFY_CASES:
        res = tmp_path / kind / "results"
        shutil.copytree(results, res, symlinks=True)
        Results(res).verify_report.write_text("tfconv verify: OK\n")  # a stale report from before the damage
        _damage(kind)(res)
        monkeypatch.chdir(res.parent)
        assert cli.main(["verify", str(res), "--config", cfgfile]) == 1, kind
        out = capsys.readouterr().out
        assert expected in out, f"{kind}: {expected!r} not in:\n{out}"
        assert not Results(res).verify_report.exists(), f"{kind}: a stale verify.txt survived"
        assert cli.main(["verify", str(res), "--config", cfgfile, "--repair"]) == 1
        out = capsys.readouterr().out
        for item in removed:
            assert any(item in line for line in out.splitlines() if "removed" in line), f"{kind}: {item} not removed:\n{out}"
        # what was not damaged stays
        assert Results(res).data("synth").exists() or kind in ("dataset-modified", "dataset-missing")
        if kind not in ("runs-swapped",) and "runs/" + R1 not in " ".join(removed):
            assert store.run_path(Results(res).train("grid"), R1).exists()


def test_several_problems_are_listed_one_line_each(results, tmp_path, capsys, monkeypatch):
    res = tmp_path / "all" / "results"
    shutil.copytree(results, res)
    kinds = ("block-not-done", "trained-on-other-data", "claims-edited", "aggregate-changed")
    for kind in kinds:
        _damage(kind)(res)
    monkeypatch.chdir(res.parent)
    assert cli.main(["verify", str(res)]) == 1
    out = capsys.readouterr().out
    for kind, expected, _ in VERIFY_CASES:
        if kind in kinds:
            assert expected in out, f"{expected!r} not in:\n{out}"
    n = int(out.split(": ", 1)[1].split(" problem(s)")[0])
    assert n >= len(kinds) and out.count("\n  - ") == n, out


def test_gram_check_reads_K_block_by_block_and_still_finds_damage(tmp_path):
    """verify never holds K whole: on a 2000 x 2000 Gram (32 MB) in blocks of 250 (0.5 MB) the check's
    peak allocation stays under 4 MB (a block, its mirror and the diagonal, with room to spare), it
    passes a good Gram, and it still finds a changed block, a broken mirror and an eigenvalue sum that
    contradicts trace K."""
    import tracemalloc

    n, b = 2000, 250
    rng = np.random.default_rng(0)
    J = rng.standard_normal((n, 40))
    K = J @ J.T / 40 + 0.1 * np.eye(n)
    gs = tmp_path / "gram.zarr"
    g = store.ensure_gram(gs, "r0", 0, n, b)
    for bi, bj in store.upper_blocks(n, b):
        store.write_block(g, bi, bj, K[bi * b:(bi + 1) * b, bj * b:(bj + 1) * b], b)
    store.finalize_gram(g, np.linalg.eigvalsh(K))
    del J

    def check():
        return store.check_gram(gs, "r0", 0)

    tracemalloc.start()
    problems = check()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert problems == []
    assert peak < 4e6, f"verify allocated {peak / 1e6:.1f} MB at its peak for a {K.nbytes / 1e6:.0f} MB K"
    Kz = store.open_gram(gs, "r0", 0)["K"]
    Kz[0, 300] = K[0, 300] + 1.0  # inside upper block (0, 1): its digest no longer matches
    assert "(0,1) changed" in " ".join(check())
    Kz[0, 300] = K[0, 300]
    Kz[300, 0] = K[300, 0] + 1.0  # the mirror of block (0, 1) only
    assert "(0,1) mirror differs" in " ".join(check())
    Kz[300, 0] = K[300, 0]
    Kz[5, 5] = K[5, 5] + 1.0  # the diagonal: the block digest and the trace both disagree
    msg = " ".join(check())
    assert "(0,0) changed" in msg and "trace K" in msg


def test_a_run_stopped_at_the_float_floor_is_not_damage_but_nan_before_the_stop_is(tmp_path):
    """A run that reached `stop_ratio * loss_0` stops with NaN records after `stop_epoch` (tfconv.core.train):
    its records up to the stop are checked, those after it are not; a NaN before the stop still is damage."""
    from tfconv import make_synthetic
    from tfconv.core.model import ModelSpec
    from tfconv.core.train import TrainConfig, train_gd

    data = make_synthetic(n_samples=6, d_s=4, d=8, seed=0)
    spec = ModelSpec(width=16, d=8, d_s=4, scaling="inv_sqrt", init="lecun")
    train = TrainConfig(step_size=0.5, epochs=200, checkpoint_epochs=(0, 200), stop_ratio=0.5)
    result = train_gd(spec, data.X, data.y, seed=0, train=train)
    assert 0 < result.stop_epoch < 200 and np.isnan(result.loss[-1]), "the run must stop at its floor to test this"
    ts = tmp_path / "train.zarr"
    store.ensure_train_store(str(ts))
    store.write_run(str(ts), "r", {"width": 16}, result)
    _, problems = store.check_run(str(ts), "r", checkpoint_epochs=[0, 200])
    assert problems == []

    early = result.stop_epoch - 1
    result.loss[early] = np.nan
    store.write_run(str(ts), "r2", {"width": 16}, result)
    _, problems = store.check_run(str(ts), "r2", checkpoint_epochs=[0, 200])
    assert any("curve loss has 1 NaN/inf" in p for p in problems), problems


def test_verify_reports_progress_per_store_and_quiet_silences_it(results, capsys, monkeypatch):
    """`tfconv verify` is not silent while it works: a line for the datasets and one before and after each
    experiment's stores (and one every few seconds inside a large store); -q leaves only the result."""
    from tfconv.pipeline.verify import verify_path

    lines = []
    verify_path(results, progress=lines.append)
    assert lines[0].startswith("datasets: 1 checked (")
    assert lines[1].startswith("[1/1] grid: checking its runs, Grams"), lines
    assert lines[-1].startswith("[1/1] grid: ") and "checked (" in lines[-1] and lines[-1].endswith(" s)"), lines

    monkeypatch.chdir(results.parent)
    cfgfile = str(results.parent / "config.yaml")
    assert cli.main(["verify", str(results), "--config", cfgfile]) == 0
    err = capsys.readouterr().err
    assert "[1/1] grid: checking its runs" in err, err
    assert cli.main(["-q", "verify", str(results), "--config", cfgfile]) == 0
    cap = capsys.readouterr()
    assert "[1/1]" not in cap.err and "OK (checked" in cap.out
