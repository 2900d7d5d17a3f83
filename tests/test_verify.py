"""`tfconv verify` on damaged results: every problem is listed, one line each, and the exit status is 1."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from inputs import trained_results  # noqa: E402 (tests/ is on sys.path)
from tfconv import cli, runner, store
from timeouts import hard_timeout  # noqa: E402

# ------------------------------------------------------------------------------------------------
# tfconv verify on damaged results
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A complete results folder (dataset, one run, its Grams) made in-process."""
    import torch
    import zarr

    root = tmp_path_factory.mktemp("verify") / "results"
    wf, points = trained_results(root)
    res, exp = wf.results, wf.experiment("grid")
    # as the workflow records it: relative to the folder the workflow runs in
    zarr.open_group(str(res.train("grid")), mode="a").attrs["dataset_store"] = "results/data/synth.zarr"
    threads = torch.get_num_threads()
    for p in points:
        for e in (0, 5):
            grp = store.ensure_gram(str(res.gram("grid")), p.run_id, e, 12, 5)
            for bi, bj in store.upper_blocks(12, 5):
                runner.gram_block(exp, p, str(res.data("synth")), str(res.train("grid")), str(res.gram("grid")),
                                  e, bi, bj, "structured", 5, 5, 1)
            runner.finalize_gram(grp)
    torch.set_num_threads(threads)
    return root


def _damage(kind):
    def act(res: Path):
        import zarr

        rid = "width=4_scaling=inv_sqrt_init=lecun_seed=0"
        run = res / "train" / "grid.zarr" / "runs" / rid
        g0 = res / "gram" / "grid.zarr" / rid / "epoch=0"
        if kind == "run-missing":
            shutil.rmtree(run)
        elif kind == "run-nan":
            arr = zarr.open_array(str(run / "loss"), mode="a")
            arr[2] = np.nan
        elif kind == "run-unreadable":
            shutil.rmtree(run / "loss")
        elif kind == "gram-missing":
            shutil.rmtree(g0)
        elif kind == "gram-incomplete":
            zarr.open_group(str(g0), mode="a").attrs["complete"] = False
        elif kind == "block-not-done":
            zarr.open_array(str(g0 / "blocks_done"), mode="a")[0, 1] = 0
        elif kind == "gram-nan":
            zarr.open_array(str(g0 / "K"), mode="a")[0, 0] = np.nan
        elif kind == "no-eigenvalues":
            shutil.rmtree(g0 / "eigenvalues")
        elif kind == "dataset-modified":
            arr = zarr.open_array(str(res / "data" / "synth.zarr" / "X"), mode="a")
            arr[0, 0, 0] = 0.5
        elif kind == "trained-on-other-data":
            zarr.open_group(str(res / "train" / "grid.zarr"), mode="a").attrs["dataset_sha256"] = "0" * 64
        elif kind == "dataset-missing":
            shutil.rmtree(res / "data" / "synth.zarr")

    return act


VERIFY_CASES = [
    ("run-missing", "run width=4_scaling=inv_sqrt_init=lecun_seed=0 is missing or incomplete"),
    ("run-nan", "curve loss has 1 NaN/inf values where none may be"),
    ("run-unreadable", "is marked complete but cannot be read"),
    ("gram-missing", "Gram of width=4_scaling=inv_sqrt_init=lecun_seed=0 at epoch 0 is missing or incomplete"),
    ("gram-incomplete", "at epoch 0 is missing or incomplete"),
    ("block-not-done", "is marked complete but has 1 block(s) not done"),
    ("gram-nan", "has 1 non-finite entries"),
    ("no-eigenvalues", "has no eigenvalues"),
    ("dataset-modified", "does not match the recorded"),
    ("trained-on-other-data", "trained on dataset sha256 0000000000000000"),
    ("dataset-missing", "its dataset store"),
]


@hard_timeout(120)
def test_verify_lists_every_problem_and_exits_nonzero(results, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(results.parent)
    assert cli.main(["verify", str(results)]) == 0, capsys.readouterr().out
    capsys.readouterr()
    all_damaged = tmp_path / "all" / "results"
    shutil.copytree(results, all_damaged)
    for kind, expected in VERIFY_CASES:
        res = tmp_path / kind / "results"
        shutil.copytree(results, res)
        _damage(kind)(res)
        monkeypatch.chdir(res.parent)
        assert cli.main(["verify", str(res)]) == 1, kind
        out = capsys.readouterr().out
        assert expected in out, f"{kind}: {expected!r} not in:\n{out}"
    # several problems at once: one line each
    for kind in ("run-nan", "block-not-done", "no-eigenvalues", "trained-on-other-data"):
        _damage(kind)(all_damaged)
    monkeypatch.chdir(all_damaged.parent)
    assert cli.main(["verify", str(all_damaged)]) == 1
    out = capsys.readouterr().out
    for kind, expected in VERIFY_CASES:
        if kind in ("run-nan", "block-not-done", "no-eigenvalues", "trained-on-other-data"):
            assert expected in out, f"{expected!r} not in:\n{out}"
    n = int(out.split(": ", 1)[1].split(" problem(s)")[0])
    assert n >= 4 and out.count("\n  - ") == n, out
