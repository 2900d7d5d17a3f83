"""The stores and the results layout: one owner per format, atomic publication, refusals that name
the store (real Zarr stores on disk)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tfconv import store
from tfconv.config import DatasetSpec, Experiment
from tfconv.core.train import TrainConfig, train_gd
from tfconv.data import content_hash, make_synthetic
from tfconv.store import Results


def test_results_layout_is_spelled_in_one_place():
    r = Results("out")
    assert str(r.data("synth")) == "out/data/synth.zarr"
    assert str(r.train("e")) == "out/train/e.zarr" and str(r.train_manifest("e")) == "out/train/e.json"
    assert str(r.gram("e")) == "out/gram/e.zarr" and str(r.gram_manifest("e")) == "out/gram/e.json"
    assert str(r.aggregate("e")) == "out/aggregate/e.zarr"
    assert [str(r.figure("e", "spectrum", k)) for k in ("png", "csv", "slopes", "finding")] == [
        "out/figures/e/spectrum.png", "out/figures/e/spectrum.csv", "out/figures/e/spectrum.slopes.csv",
        "out/figures/e/spectrum.finding.txt"]
    assert (str(r.claims), str(r.slopes), str(r.verify_report)) == (
        "out/tables/claims.csv", "out/tables/slopes.csv", "out/verify.txt")
    # the rules call the same methods with wildcard placeholders
    assert str(r.data("{dataset}")) == "out/data/{dataset}.zarr"
    assert str(r.log("plot", "{experiment}", "{analysis}")) == "out/logs/plot/{experiment}/{analysis}.log"
    assert str(r.log("tables")) == "out/logs/tables.log"


def test_dataset_store_round_trip_and_refusals(tmp_path):
    ds = make_synthetic(6, d_s=3, d=4, seed=2)
    path = Results(tmp_path).data("s")
    digest = store.write_dataset(path, ds, {"who": "test"})
    assert digest == content_hash(ds.X, ds.y)
    assert not list(path.parent.glob(".staging-*")), "a staging folder was left behind"
    back = store.read_dataset(path)
    assert back.X.tobytes() == ds.X.tobytes() and back.y.tobytes() == ds.y.tobytes()
    assert back.meta["content_hash"] == digest == store.dataset_hash(path)
    # a modified array no longer matches its recorded hash
    import zarr

    zarr.open_array(str(path / "X"), mode="a")[0, 0, 0] = 9.0
    with pytest.raises(store.StoreError, match="does not match the recorded"):
        store.read_dataset(path)
    assert store.read_dataset(path, verify=False).X[0, 0, 0] == 9.0
    # without its completion mark a store is refused
    meta = json.loads(store.metadata_file(path).read_text())
    meta["attributes"].pop("complete")
    store.metadata_file(path).write_text(json.dumps(meta))
    with pytest.raises(store.StoreError, match="is incomplete"):
        store.read_dataset(path)


def _experiment():
    section = {"grid": {"width": [4], "seed": [0]},
               "train": {"step_size": 0.5, "epochs": 3, "loss": "mean", "checkpoint_epochs": [0, 3],
                         "dtype": "float32", "hidden": True, "divergence_factor": 1e6}}
    return Experiment.from_section("e", section, DatasetSpec("s", "synthetic", {"n_samples": 5}))


def test_run_store_round_trip_staging_and_settings_check(tmp_path):
    exp = _experiment()
    ds = make_synthetic(5, d_s=2, d=3, seed=0)
    p = exp.points[0]
    result = train_gd(p.spec(ds), ds.X, ds.y, p.seed, exp.train.config(0.5))
    train = tmp_path / "train.zarr"
    store.ensure_train_store(train, {"points": [p.as_dict()]})
    (store.runs_dir(train) / ".staging-leftover-1234").mkdir()  # a killed writer's leftovers: its folder
    (store.runs_dir(train) / ".staging-leftover-1234.zip").write_bytes(b"PK\x03\x04 cut")  # and half a zip
    store.ensure_train_store(train)
    assert not list(store.runs_dir(train).glob(".staging-*"))
    assert not store.run_complete(train, p.run_id)
    store.write_run(train, p.run_id, p.as_dict(), result, {"dataset_sha256": "abc"})
    assert store.run_complete(train, p.run_id) and store.list_runs(train) == [p.run_id]
    # one file per run: the run directory holds exactly <rid>.zip, no folder, no staging leftover
    assert sorted(f.name for f in store.runs_dir(train).iterdir()) == sorted(
        [f"{p.run_id}.zip", store.metadata_file(store.runs_dir(train)).name])
    assert store.run_path(train, p.run_id).is_file()
    assert store.run_attrs(train, p.run_id)["status"] == "complete"
    run = store.read_run(train, p.run_id)
    assert run["curves"]["loss"].tobytes() == result.loss.tobytes()
    assert sorted(run["checkpoints"]) == [0, 3]
    for name, w in result.checkpoints[3].items():
        assert run["checkpoints"][3][name].tobytes() == w.tobytes()
    assert run["attrs"]["status"] == "complete" and run["attrs"]["point"] == p.as_dict()
    # a rerun with other training settings or other data is refused, naming the run and the difference
    with pytest.raises(store.StoreError, match=r"was trained with step_size=0.5 \(config: 1.0\)"):
        store.check_train_store(train, "abc", TrainConfig(step_size=1.0, epochs=3, checkpoint_epochs=(0, 3)).to_dict())
    with pytest.raises(store.StoreError, match="was trained on dataset sha256 abc"):
        store.check_train_store(train, "xyz", exp.train.to_dict())
    store.check_train_store(train, "abc", exp.train.to_dict())  # the same settings: fine


def test_gram_store_blocks_mirror_and_publication(tmp_path):
    n, bs = 7, 3
    rng = np.random.default_rng(0)
    F = rng.standard_normal((n, 5))
    K = F @ F.T
    gs = tmp_path / "gram.zarr"
    g = store.ensure_gram(gs, "run", 0, n, bs)
    blocks = store.upper_blocks(n, bs)
    assert blocks == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    ranges = store.block_ranges(n, bs)
    for bi, bj in blocks[:-1]:
        (r0, r1), (c0, c1) = ranges[bi], ranges[bj]
        store.write_block(g, bi, bj, K[r0:r1, c0:c1], bs)
    with pytest.raises(store.StoreError, match=r"blocks \[\(2, 2\)\] are not done"):
        store.assembled_matrix(g)
    store.write_block(g, 2, 2, K[6:7, 6:7], bs)
    assert np.array_equal(store.assembled_matrix(g), K)  # the lower blocks are the mirrored upper ones
    assert not store.gram_complete(gs, "run", 0)
    ev = np.linalg.eigvalsh(K)
    store.finalize_gram(g, ev, {"who": "test"})  # the store publishes what the caller computed
    assert store.gram_complete(gs, "run", 0)
    K2, ev2 = store.read_gram(gs, "run", 0)
    assert np.array_equal(K2, K) and np.array_equal(ev2, ev)
    assert store.check_gram(gs, "run", 0) == []  # its content checks (tfconv verify) find nothing
    with pytest.raises(store.StoreError, match="existing Gram has shape"):
        store.ensure_gram(gs, "run", 0, n, 2)


def test_gram_factor_rows_are_kept_whole_and_dropped(tmp_path):
    """The factor rows a Gram's block tasks share: read back exactly; a missing, truncated or foreign
    file (other shape or dtype) reads as absent; no temporary file stays; finalisation and a recreated
    group remove them."""
    gs = tmp_path / "gram.zarr"
    g = store.ensure_gram(gs, "run", 0, 7, 3)
    F = np.random.default_rng(1).standard_normal((3, 11))
    out = np.empty((3, 11))
    assert not store.read_factors(g, 0, out)
    store.write_factors(g, 0, F)
    assert store.read_factors(g, 0, out) and np.array_equal(out, F)
    assert sorted(p.name for p in store.factor_file(g, 0).parent.iterdir()) == ["0.npy"]
    assert not store.read_factors(g, 0, np.empty((3, 10)))  # another G
    assert not store.read_factors(g, 0, np.empty((3, 11), dtype=np.float32))  # another precision
    store.write_factors(g, 1, F)
    f1 = store.factor_file(g, 1)
    f1.write_bytes(f1.read_bytes()[:-8])  # truncated
    assert not store.read_factors(g, 1, out)
    store.finalize_gram(g, np.zeros(7))
    assert not store.factor_file(g, 0).parent.exists()
    g2 = store.ensure_gram(gs, "run2", 0, 7, 3)
    store.write_factors(g2, 0, F)
    import shutil
    shutil.rmtree(store.gram_path(gs, "run2", 0) / "K")  # a damaged group is recreated: its factors go with it
    g2 = store.ensure_gram(gs, "run2", 0, 7, 3)
    assert not store.read_factors(g2, 0, out) and not store.factor_file(g2, 0).exists()


def test_aggregate_is_written_atomically_and_reopens(tmp_path):
    from tfconv.store.aggregate import build_aggregate, open_aggregate, write_aggregate

    exp = _experiment()
    rid = exp.points[0].run_id
    runs = {rid: {"status": "complete", "diverged_epoch": -1, "curves": {"loss": np.array([1.0, 0.5, 0.25, 0.125])}}}
    xds = build_aggregate(exp, runs, {(rid, 0): {"lambda_min": 1.0, "lambda_max": 2.0, "kernel_trace": 3.0,
                                                  "kernel_change": 0.0}}, {"kind": "synthetic"}, {"p": 1})
    assert dict(xds.sizes) == {"width": 1, "seed": 1, "epoch": 4, "checkpoint_epoch": 2}
    path = Results(tmp_path).aggregate("e")
    write_aggregate(path, xds)
    assert not list(path.parent.glob(".staging-*"))
    back = open_aggregate(path)
    assert back["loss"].values.ravel().tolist() == [1.0, 0.5, 0.25, 0.125]
    assert str(back["status"].values.ravel()[0]) == "complete" and back.attrs["experiment"] == "e"
    write_aggregate(path, xds.assign(loss=xds["loss"] * 2))  # replaced whole, never half-written
    assert open_aggregate(path)["loss"].values.ravel().tolist() == [2.0, 1.0, 0.5, 0.25]


def test_a_results_folder_belongs_to_one_workflow(tmp_path):
    r = Results(tmp_path / "shared-results")
    r.claim(tmp_path / "workflow-a")
    r.claim(tmp_path / "workflow-a")  # the same workflow again: fine
    with pytest.raises(PermissionError, match="belongs to the workflow run from .*workflow-a"):
        r.claim(tmp_path / "workflow-b")
    r.owner_file.unlink()  # handed over, as the message says
    r.claim(tmp_path / "workflow-b")


def test_aggregate_opens_with_plain_xarray_without_warnings(tmp_path):
    """What the README tells users to type: xarray.open_zarr(path), with Snakemake's timestamp file in
    the folder; variables carry long_name, units and description; provenance is a readable mapping."""
    import warnings

    import xarray as xr

    from tfconv.store.aggregate import build_aggregate, write_aggregate

    exp = _experiment()
    rid = exp.points[0].run_id
    runs = {rid: {"status": "complete", "diverged_epoch": -1, "curves": {"loss": np.array([1.0, 0.5, 0.25, 0.125])}}}
    path = Results(tmp_path).aggregate("e")
    write_aggregate(path, build_aggregate(exp, runs, {}, {"kind": "synthetic", "n_samples": 5},
                                          {"git_revision": "abc", "versions": {"torch": "2.13"}}))
    (path / ".snakemake_timestamp").write_text("")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = xr.open_zarr(path)
    assert not caught, [str(w.message)[:120] for w in caught]
    for name in ("loss", "kernel_change", "eta", "status"):
        assert {"long_name", "units", "description"} <= set(ds[name].attrs), name
    meta = {k: json.loads(ds.attrs[k]) for k in ("provenance", "dataset")}  # mappings as JSON strings (netCDF)
    assert meta["provenance"]["versions"]["torch"] == "2.13" and meta["dataset"]["n_samples"] == 5


def test_public_store_queries_and_locating_a_store(tmp_path):
    """Code outside tfconv.store asks these (never Zarr's metadata files): exists, attrs, modified_ns;
    and Results.locate names the results folder, stage and name of a store path."""
    r = Results(tmp_path)
    path = r.data("s")
    assert not store.exists(path) and store.attrs(path) == {}
    store.write_dataset(path, make_synthetic(4, d_s=2, d=3, seed=1))
    assert store.exists(path) and store.attrs(path)["complete"] is True and store.marked_complete(path)
    assert store.modified_ns(path) == store.metadata_file(path).stat().st_mtime_ns
    root, stage, name = Results.locate(r.train("grid"))
    assert (root.root, stage, name) == (r.root, "train", "grid")
    assert Results.locate(tmp_path / "elsewhere.zarr") is None and Results.locate(r.claims) is None


def test_the_store_never_initialises_a_model_the_caller_passes_the_initialisation_in(tmp_path):
    """write_run stores an epoch-0 checkpoint equal to the initialisation it is given as its seed only;
    read_run re-derives it with the function it is given (tfconv.runner.initial_checkpoint) and
    leaves it out without one; check_run finds nothing wrong with the run."""
    from tfconv import runner
    from tfconv.core.model import init_params

    exp = _experiment()
    ds = make_synthetic(5, d_s=2, d=3, seed=0)
    p = exp.points[0]
    result = train_gd(p.spec(ds), ds.X, ds.y, p.seed, exp.train.config(0.5))
    train = tmp_path / "train.zarr"
    store.ensure_train_store(train, {"points": [p.as_dict()]})
    store.write_run(train, p.run_id, p.as_dict(), result, initial=init_params(result.spec, result.seed))
    assert store.run_attrs(train, p.run_id)["checkpoint0_is_init"] is True
    assert sorted(store.read_run(train, p.run_id)["checkpoints"]) == [3]
    for run in (store.read_run(train, p.run_id, init=runner.initial_checkpoint), runner.load_run(train, p.run_id)):
        assert sorted(run["checkpoints"]) == [0, 3]
        assert sorted(run["checkpoints"][0]) == sorted(result.checkpoints[0])
        for name, w in result.checkpoints[0].items():
            assert run["checkpoints"][0][name].tobytes() == np.asarray(w).tobytes()
    run, problems = store.check_run(train, p.run_id, checkpoint_epochs=[0, 3])
    assert problems == [] and run["attrs"]["run_id"] == p.run_id
    assert store.check_run(train, "absent") == (None, ["run absent is missing or incomplete"])
    _, problems = store.check_run(train, p.run_id, checkpoint_epochs=[0, 2, 3])
    assert problems == ["it lacks the declared checkpoint epoch(s) [2]"]
