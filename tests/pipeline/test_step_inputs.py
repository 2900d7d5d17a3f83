"""Bad inputs of the workflow's steps are refused before any cluster starts, with a message naming
the store or file and what is wrong: dataset stores (missing, unreadable, incomplete, modified,
NaN, wrong shapes), raw data folders, earlier results that do not match the config, names that are
not in the config."""
from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from inputs import _exp, trained_results  # noqa: E402 (tests/ is on sys.path)
from tfconv import store
from tfconv.config import ConfigError, Workflow, load_workflow
from tfconv.data import content_hash
from tfconv.pipeline import steps
from tfconv.store import Results
from timeouts import hard_timeout  # noqa: E402


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A valid config, its dataset store and a tiny trained store (one point, 5 epochs)."""
    root = tmp_path_factory.mktemp("inputs") / "results"
    wf, points = trained_results(root)
    return {"root": root, "wf": wf, "cfg": dict(wf.config), "data": wf.results.data("synth"),
            "train": wf.results.train("grid"), "points": points}


@pytest.fixture
def no_clusters(monkeypatch):
    """Starting Ray or Dask fails the test: every check must come before any expensive work."""
    import tfconv.cluster.dask_gram as dg
    import tfconv.cluster.ray_grid as rg
    import tfconv.cluster.ray_slurm as rs

    def boom(*a, **k):
        raise AssertionError("a cluster was started before the bad input was rejected")

    monkeypatch.setattr(rg, "run_grid", boom)
    monkeypatch.setattr(dg, "dask_client", boom)
    monkeypatch.setattr(rs, "ray_cluster_address", boom)
    yield


def _wf(good, tmp_path, cfg=None) -> Workflow:
    """The config (good's unless given) with its results folder in tmp_path/results."""
    return load_workflow(dict(copy.deepcopy(cfg or good["cfg"]), results=str(tmp_path / "results")))


def _copy(src: Path, tmp_path: Path, stage: str) -> Path:
    """Copy good's store of `stage` (data: the dataset synth, train: the experiment grid) into tmp_path/results."""
    res = Results(tmp_path / "results")
    dst = res.data("synth") if stage == "data" else res.train("grid")
    shutil.copytree(src, dst)
    return dst


def _copy_data(good, tmp_path) -> Path:
    return _copy(good["data"], tmp_path, "data")


def _rewrite_arrays(path: Path, update_hash: bool, **arrays):
    import zarr

    root = zarr.open_group(str(path), mode="a")
    for name, value in arrays.items():
        value = np.asarray(value)
        zarr.create_array(store=root.store, name=name, shape=value.shape, dtype=value.dtype, overwrite=True)[...] = value
    if update_hash:
        names = root.attrs["arrays"]
        root.attrs["content_hash"] = content_hash(*(np.asarray(root[k][...]) for k in sorted(names)))


def _train(good, tmp_path, cfg=None):
    return steps.train_grid(_wf(good, tmp_path, cfg), "grid")


def _gram(good, tmp_path, cfg=None):
    return steps.assemble_gram(_wf(good, tmp_path, cfg), "grid")


def _mutate_data(kind):
    def make(good, tmp_path):
        d = _copy_data(good, tmp_path)
        X = store.read_dataset(d).X
        if kind == "missing":
            shutil.rmtree(d)
        elif kind == "unreadable":
            store.metadata_file(d).write_text("{ not json")
        elif kind == "incomplete":
            meta = json.loads(store.metadata_file(d).read_text())
            meta["attributes"].pop("complete")
            store.metadata_file(d).write_text(json.dumps(meta))
        elif kind == "hash":
            _rewrite_arrays(d, update_hash=False, X=X * 1.0001)
        elif kind == "nan":
            X = X.copy()
            X[3, 1, 2] = np.nan
            _rewrite_arrays(d, update_hash=True, X=X)
        elif kind == "shape":
            _rewrite_arrays(d, update_hash=True, X=X.reshape(X.shape[0], -1))
        elif kind == "labels":
            _rewrite_arrays(d, update_hash=True, y=np.zeros((X.shape[0] - 1, 1)))
        return d

    return make


def _idx_folder(tmp_path, images, labels=None, truncate=False):
    from tfconv.data.mnist import idx_bytes

    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    img = idx_bytes(images)
    (raw / "train-images-idx3-ubyte").write_bytes(img[:3] if truncate else img)
    lab = labels if labels is not None else np.arange(images.shape[0]) % 10
    (raw / "train-labels-idx1-ubyte").write_bytes(idx_bytes(lab))
    return tmp_path / "mnist"


def _make(good, tmp_path, entry, name="m"):
    cfg = copy.deepcopy(good["cfg"])
    cfg["datasets"] = {name: entry}
    _exp(cfg)["dataset"] = name
    return steps.make_dataset(_wf(good, tmp_path, cfg), name)


def _other_data(good, tmp_path):
    """A dataset store of the same name made with another seed, in tmp_path's results."""
    cfg = copy.deepcopy(good["cfg"])
    cfg["datasets"]["synth"]["seed"] = 1
    steps.make_dataset(_wf(good, tmp_path, cfg), "synth")


def case_step_size_changed(good, tmp_path):
    cfg = copy.deepcopy(good["cfg"])
    _exp(cfg)["train"]["step_size"] = 0.5
    _copy_data(good, tmp_path)
    _copy(good["train"], tmp_path, "train")
    return _train(good, tmp_path, cfg)


def case_other_dataset(good, tmp_path):
    _other_data(good, tmp_path)
    _copy(good["train"], tmp_path, "train")
    return _train(good, tmp_path)


def case_other_dataset_gram(good, tmp_path):
    _other_data(good, tmp_path)
    _copy(good["train"], tmp_path, "train")
    return _gram(good, tmp_path)


def case_gram_before_training(good, tmp_path):
    _copy_data(good, tmp_path)
    return _gram(good, tmp_path)


def case_gram_block_size_changed(good, tmp_path):
    _copy_data(good, tmp_path)
    _copy(good["train"], tmp_path, "train")
    wf = _wf(good, tmp_path)
    store.ensure_gram(str(wf.results.gram("grid")), good["points"][0].run_id, 0, 12, 3)  # started with blocks of 3
    return _gram(good, tmp_path)


def case_fewer_samples_than_grid(good, tmp_path):
    small = copy.deepcopy(good["cfg"])
    small["datasets"]["synth"]["n_samples"] = 4
    steps.make_dataset(_wf(good, tmp_path, small), "synth")
    cfg = copy.deepcopy(good["cfg"])
    _exp(cfg)["grid"]["n_samples"] = [6]
    return _train(good, tmp_path, cfg)


# (id, action(good, tmp_path) raising, exception type, substrings of the message)
STEP_CASES = [
    ("dataset-store-missing", lambda g, t: _train(g, t) if _mutate_data("missing")(g, t) else None, store.StoreError,
     ["synth.zarr does not exist"]),
    ("dataset-store-unreadable", lambda g, t: _mutate_data("unreadable")(g, t) and _train(g, t), store.StoreError,
     ["synth.zarr is not a readable Zarr group"]),
    ("dataset-store-incomplete", lambda g, t: _mutate_data("incomplete")(g, t) and _train(g, t), store.StoreError,
     ["synth.zarr is incomplete"]),
    ("dataset-hash-mismatch", lambda g, t: _mutate_data("hash")(g, t) and _train(g, t), store.StoreError,
     ["synth.zarr: content hash", "does not match the recorded"]),
    ("dataset-nan", lambda g, t: _mutate_data("nan")(g, t) and _train(g, t), ValueError,
     ["synth.zarr: X contains 1 NaN/inf values", "every value must be finite"]),
    ("dataset-wrong-shape", lambda g, t: _mutate_data("shape")(g, t) and _train(g, t), ValueError,
     ["synth.zarr: X must have shape (N, d_s, d)", "got shape (12, 32)"]),
    ("dataset-label-count", lambda g, t: _mutate_data("labels")(g, t) and _gram(g, t), ValueError,
     ["synth.zarr: y must have shape (N, C) with N = 12", "(11, 1)"]),
    ("train-store-from-other-dataset", case_other_dataset, store.StoreError,
     ["grid.zarr was trained on dataset sha256", "delete"]),
    ("train-store-other-step-size", case_step_size_changed, store.StoreError,
     ["was trained with step_size=1.0 (config: 0.5)"]),
    ("gram-from-train-of-other-dataset", case_other_dataset_gram, store.StoreError,
     ["was trained on dataset sha256"]),
    ("gram-before-training", case_gram_before_training, store.StoreError,
     ["grid.zarr does not exist; run the `train_grid` step first"]),
    ("gram-block-size-changed", case_gram_block_size_changed, store.StoreError,
     ["started with gram.block_size=3, the config now says 5"]),
    ("grid-n-samples-beyond-store", case_fewer_samples_than_grid, ConfigError,
     ["experiments.grid.grid.n_samples: 6 exceeds the dataset's 4 samples"]),
    ("unknown-experiment", lambda g, t: steps.train_grid(_wf(g, t), "nope"),
     ConfigError, ["experiment 'nope' is not in the config; defined: grid"]),
    ("unknown-dataset", lambda g, t: steps.make_dataset(_wf(g, t), "nope"), ConfigError,
     ["dataset 'nope' is not in the config; defined: synth"]),
    ("mnist-idx-files-missing", lambda g, t: _make(g, t, {"kind": "mnist", "source": "idx", "path": str(t)}),
     FileNotFoundError, ["MNIST IDX file 'train-images-idx3-ubyte' not found under", "MNIST/raw"]),
    ("mnist-idx-truncated", lambda g, t: _make(g, t, {"kind": "mnist", "source": "idx",
                                                      "path": str(_idx_folder(t, np.zeros((20, 28, 28), np.uint8), truncate=True))}),
     ValueError, ["train-images-idx3-ubyte is too short"]),
    ("mnist-idx-wrong-shape", lambda g, t: _make(g, t, {"kind": "mnist", "source": "idx",
                                                        "path": str(_idx_folder(t, np.zeros((20, 27, 27), np.uint8)))}),
     ValueError, ["holds images of shape (27, 27), not (28, 28)"]),
    ("mnist-idx-not-original", lambda g, t: _make(g, t, {"kind": "mnist", "source": "idx",
                                                         "path": str(_idx_folder(t, np.zeros((20, 28, 28), np.uint8)))}),
     Exception, ["md5 mismatch for MNIST IDX file", "train-images-idx3-ubyte"]),
    ("imdb-layout", lambda g, t: _make(g, t, {"kind": "text", "source": "imdb", "path": str(t)}, name="t"),
     FileNotFoundError, ["IMDB folder missing", "train/neg"]),
]


@hard_timeout(120)
@pytest.mark.parametrize("case", STEP_CASES, ids=[c[0] for c in STEP_CASES])
def test_bad_step_input_is_rejected_before_any_cluster_starts(case, good, tmp_path, no_clusters):
    name, action, exc_type, expected = case
    t0 = time.time()
    with pytest.raises(exc_type) as err:
        action(good, tmp_path)
    msg = str(err.value)
    for s in expected:
        assert s in msg, f"{name}: {s!r} not in the message:\n{msg}"
    res = Results(tmp_path / "results")
    assert not res.train_manifest("grid").exists() and not res.gram_manifest("grid").exists()
    assert time.time() - t0 < 30, f"{name}: rejected only after {time.time() - t0:.0f}s"
