"""Bad input is rejected before any expensive work, with a message naming the key or file and what
is allowed (issue 8): config values (schema and semantic checks), config files, the inputs of each
pipeline step (dataset stores, raw data folders, output folders, earlier results), `snakemake -n`
on a bad configfile, and `tfconv verify` on damaged results."""
from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tfconv import cli, pipeline, runner, store
from tfconv.config import ConfigError, expand_grid, load_config, run_id
from tfconv.data import content_hash
from timeouts import hard_timeout  # noqa: E402 (tests/ is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

BASE = {
    "datasets": {"synth": {"kind": "synthetic", "n_samples": 12, "d_s": 4, "d": 8}},
    "experiments": {
        "grid": {
            "dataset": "synth",
            "grid": {"width": [8, 16], "scaling": ["inv_sqrt", "inv"], "init": ["lecun", "ntk"], "seed": [0]},
            "train": {"step_size": 1.0, "epochs": 30, "checkpoint_epochs": [0, 10, 30]},
            "analyses": ["loss_per_width", "figure9"],
        }
    },
    "gram": {"block_size": 5, "chunk_size": 5},
}


def _exp(c):
    return c["experiments"]["grid"]


def _set(*path_and_value):
    *path, value = path_and_value

    def mutate(c):
        d = c
        for k in path[:-1]:
            d = d.setdefault(k, {})
        d[path[-1]] = value

    return mutate


def _drop(*path):
    def mutate(c):
        d = c
        for k in path[:-1]:
            d = d[k]
        del d[path[-1]]

    return mutate


_FILE = Path(__file__).resolve()  # a regular file: nothing can be written "under" it

# (id, mutation of BASE, substrings the message must contain: the key and what is allowed)
CONFIG_CASES = [
    ("unknown-top-key", _set("resluts", "out"), ["unknown key 'resluts'", "did you mean 'results'", "allowed keys here"]),
    ("unknown-train-key", _set("experiments", "grid", "train", "epoch", 5),
     ["experiments.grid.train.'epoch'", "did you mean 'epochs'"]),
    ("unknown-dataset-key", _set("datasets", "synth", "n_sample", 5), ["datasets.synth.'n_sample'", "did you mean 'n_samples'"]),
    ("misspelt-init", _set("experiments", "grid", "grid", "init", ["lecunn"]),
     ["experiments.grid.grid.init.0", "'lecunn' is not allowed", "did you mean 'lecun'", "allowed: lecun, he, ntk"]),
    ("misspelt-scaling", _set("experiments", "grid", "grid", "scaling", ["inv_sqr"]),
     ["experiments.grid.grid.scaling.0", "did you mean 'inv_sqrt'", "allowed: inv_sqrt, inv or a positive number"]),
    ("negative-scaling", _set("experiments", "grid", "grid", "scaling", [-0.5]),
     ["experiments.grid.grid.scaling.0", "-0.5 is not allowed", "inv_sqrt, inv or a positive number"]),
    ("misspelt-engine", _set("gram", "engine", "structurd"), ["gram.engine", "did you mean 'structured'", "allowed: structured, exact"]),
    ("misspelt-kind", _set("datasets", "synth", "kind", "synthetc"), ["datasets.synth.kind", "allowed: synthetic, mnist, text"]),
    ("misspelt-analysis", _set("experiments", "grid", "analyses", ["figure_9"]), ["experiments.grid.analyses.0", "did you mean 'figure9'"]),
    ("zero-width", _set("experiments", "grid", "grid", "width", [0, 8]), ["experiments.grid.grid.width.0", "must be >= 1"]),
    ("zero-step", _set("experiments", "grid", "train", "step_size", 0), ["experiments.grid.train.step_size", "must be > 0"]),
    ("negative-step", _set("experiments", "grid", "train", "step_size", -1.0), ["experiments.grid.train.step_size", "must be > 0"]),
    ("nan-step", _set("experiments", "grid", "train", "step_size", float("nan")),
     ["experiments.grid.train.step_size", "NaN and infinite numbers are not allowed"]),
    ("inf-step", _set("experiments", "grid", "train", "step_size", float("inf")), ["experiments.grid.train.step_size", "finite"]),
    ("zero-epochs", _set("experiments", "grid", "train", "epochs", 0), ["experiments.grid.train.epochs", "must be >= 1"]),
    ("float-epochs", _set("experiments", "grid", "train", "epochs", 2.5), ["experiments.grid.train.epochs", "expected integer"]),
    ("empty-width", _set("experiments", "grid", "grid", "width", []), ["experiments.grid.grid.width", "needs at least 1"]),
    ("empty-seed", _set("experiments", "grid", "grid", "seed", []), ["experiments.grid.grid.seed", "needs at least 1"]),
    ("no-width", _drop("experiments", "grid", "grid", "width"), ["experiments.grid.grid", "'width' is a required property"]),
    ("duplicate-width", _set("experiments", "grid", "grid", "width", [8, 8]), ["experiments.grid.grid.width", "non-unique"]),
    ("width-not-list", _set("experiments", "grid", "grid", "width", "8"), ["experiments.grid.grid.width", "expected array"]),
    ("checkpoint-beyond-budget", _set("experiments", "grid", "train", "checkpoint_epochs", [0, 31]),
     ["experiments.grid.train.checkpoint_epochs", "epoch 31 is beyond the budget epochs=30", "allowed 0..30"]),
    ("negative-checkpoint", _set("experiments", "grid", "train", "checkpoint_epochs", [-1]),
     ["experiments.grid.train.checkpoint_epochs.0", "must be >= 0"]),
    ("no-epoch0-for-gram-analyses", _set("experiments", "grid", "train", "checkpoint_epochs", [10]),
     ["experiments.grid.train.checkpoint_epochs", "need epoch 0"]),
    ("chunk-larger-than-block", _set("gram", "chunk_size", 8), ["gram.chunk_size", "exceeds gram.block_size=5", "allowed 1..5"]),
    ("zero-block", _set("gram", "block_size", 0), ["gram.block_size", "must be >= 1"]),
    ("block-too-fine", lambda c: (c["gram"].update(block_size=1, chunk_size=1), c["datasets"]["synth"].update(n_samples=2000)),
     ["gram.block_size", "2000 x 2000 Gram of experiments.grid", "at most 100,000", "use a block_size of at least 5"]),
    ("unknown-dataset", _set("experiments", "grid", "dataset", "synt"), ["experiments.grid.dataset", "did you mean 'synth'", "defined datasets: synth"]),
    ("n-samples-beyond-dataset", _set("experiments", "grid", "grid", "n_samples", [6, 13]),
     ["experiments.grid.grid.n_samples", "13 exceeds the 12 samples of dataset 'synth'"]),
    ("no-datasets", _set("datasets", {}), ["datasets", "non-empty"]),
    ("no-experiments", _drop("experiments"), ["'experiments' is a required property"]),
    ("analysis-needs-two-inits", _set("experiments", "grid", "analyses", ["init_comparison", "scaling_comparison"]),
     []),  # valid: the grid has 2 inits and 2 scalings (guards against over-eager checks)
    ("analysis-needs-more-widths", _set("experiments", "grid", "grid", "width", [8]),
     []),  # valid: loss_per_width and figure9 need one width
    ("analysis-axis-missing", _set("experiments", "grid", "analyses", ["overparam_exponent"]),
     ["experiments.grid.analyses", "'overparam_exponent' needs at least 2 values of grid.n_samples"]),
    ("mnist-analysis-on-synthetic", _set("experiments", "grid", "analyses", ["mnist_accuracy"]),
     ["'mnist_accuracy' needs a dataset of kind mnist"]),
    ("divergence-factor", _set("experiments", "grid", "train", "divergence_factor", 1.0), ["divergence_factor", "must be > 1"]),
    ("mnist-idx-no-path", _set("datasets", "m", {"kind": "mnist", "source": "idx"}),
     ["datasets.m.path", "source 'idx' needs the folder"]),
    ("mnist-idx-missing-folder", _set("datasets", "m", {"kind": "mnist", "source": "idx", "path": "/nonexistent/mnist"}),
     ["datasets.m.path", "'/nonexistent/mnist' does not exist", "MNIST/raw"]),
    ("imdb-missing-folder", _set("datasets", "t", {"kind": "text", "source": "imdb", "path": "/nonexistent/aclImdb"}),
     ["datasets.t.path", "'/nonexistent/aclImdb' does not exist", "aclImdb"]),
    ("mnist-bad-patch", _set("datasets", "m", {"kind": "mnist", "patch_size": 5}), ["datasets.m.patch_size", "allowed: 1, 2, 4, 7, 14, 28"]),
    ("experiment-name", lambda c: c["experiments"].update({"my exp": copy.deepcopy(_exp(c))}),
     ["experiments.my exp", "may only contain letters, digits"]),
    ("dataset-name", _set("datasets", "syn/th", {"kind": "synthetic"}), ["datasets.syn/th", "may only contain"]),
    ("empty-results", _set("results", ""), ["results", "empty"]),
    ("results-under-a-file", _set("results", str(_FILE / "results")), ["results", "is a file, not a folder"]),
    ("zero-threads", _set("threads_per_run", 0), ["threads_per_run", "must be >= 1"]),
    ("resource-typo", _set("resources", {"train_grid": {"thread": 2}}), ["resources.train_grid.'thread'", "did you mean 'threads'"]),
    ("ray-retries", _set("ray", {"max_retries": -1}), ["ray.max_retries", "must be >= 0"]),
    ("dask-workers", _set("dask", {"n_workers": 0}), ["dask.n_workers", "must be >= 1"]),
    ("confidence", _set("analysis", {"confidence": 1.5}), ["analysis.confidence"]),
]


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_is_rejected_with_a_clear_message(case, tmp_path, monkeypatch):
    name, mutate, expected = case
    monkeypatch.chdir(tmp_path)  # the relative `results` folder is checked here
    cfg = copy.deepcopy(BASE)
    mutate(cfg)
    t0 = time.time()
    if not expected:
        load_config(cfg)  # control cases: valid
        return
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    msg = str(err.value)
    for s in expected:
        assert s in msg, f"{name}: {s!r} not in the message:\n{msg}"
    assert time.time() - t0 < 5


def test_bad_config_files(tmp_path, capsys):
    cases = {
        "missing.yaml": (None, "does not exist"),
        "empty.yaml": ("", "is empty; it needs at least `datasets` and `experiments`"),
        "syntax.yaml": ("datasets: {synth: [kind: synthetic\n", "is not valid YAML"),
        "list.yaml": ("- a\n- b\n", "must be a mapping"),
        "typo.yaml": (yaml.safe_dump({**BASE, "gram": {"block_size": 5, "chunk_size": 6}}), "gram.chunk_size"),
    }
    for fname, (text, expected) in cases.items():
        path = tmp_path / fname
        if text is not None:
            path.write_text(text)
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert expected in str(err.value) and (fname in str(err.value) or expected in str(err.value)), str(err.value)
        assert cli.main(["validate", str(path)]) == 2
        assert expected in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# the inputs of each step
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A valid config, its dataset store and a tiny trained store (one point, 5 epochs)."""
    root = tmp_path_factory.mktemp("inputs")
    cfg = copy.deepcopy(BASE)
    cfg["results"] = str(root / "results")
    _exp(cfg)["grid"] = {"width": [4], "seed": [0]}
    _exp(cfg)["train"] = {"step_size": 1.0, "epochs": 5, "checkpoint_epochs": [0, 5]}
    _exp(cfg)["analyses"] = []
    cfg = load_config(cfg)
    data = root / "results" / "data" / "synth.zarr"
    pipeline.simulate_data(cfg, "synth", str(data))
    train = root / "results" / "train" / "grid.zarr"
    exp = _exp(cfg)
    points = expand_grid(exp)
    store.ensure_train_store(str(train), {"points": points, "dataset_sha256": store.dataset_hash(data),
                                          "dataset_store": str(data), "gram": True, "checkpoint_epochs": [0, 5]})
    import torch

    threads = torch.get_num_threads()
    for p in points:
        runner.train_point("grid", exp, p, str(data), str(train), threads=1)
    torch.set_num_threads(threads)
    return {"root": root, "cfg": cfg, "data": data, "train": train, "points": points}


@pytest.fixture
def no_clusters(monkeypatch):
    """Starting Ray or Dask fails the test: every check must come before any expensive work."""
    import tfconv.cluster.dask_gram as dg
    import tfconv.cluster.ray_grid as rg

    def boom(*a, **k):
        raise AssertionError("a cluster was started before the bad input was rejected")

    monkeypatch.setattr(rg, "run_grid", boom)
    monkeypatch.setattr(dg, "dask_client", boom)
    with pytest.MonkeyPatch.context() as m:
        try:
            import tfconv.cluster.ray_slurm as rs

            m.setattr(rs, "ray_cluster_address", boom)
        except ImportError:
            pass
        yield


def _copy_data(good, tmp_path) -> Path:
    dst = tmp_path / "data" / "synth.zarr"
    shutil.copytree(good["data"], dst)
    return dst


def _rewrite_arrays(path: Path, update_hash: bool, **arrays):
    import zarr

    root = zarr.open_group(str(path), mode="a")
    for name, value in arrays.items():
        value = np.asarray(value)
        zarr.create_array(store=root.store, name=name, shape=value.shape, dtype=value.dtype, overwrite=True)[...] = value
    if update_hash:
        names = root.attrs["arrays"]
        root.attrs["content_hash"] = content_hash(*(np.asarray(root[k][...]) for k in sorted(names)))


def _train(good, data, tmp_path, train=None, cfg=None):
    cfg = cfg or good["cfg"]
    out = tmp_path / "train" / "grid.json"
    return pipeline.train_grid(cfg, "grid", str(data), str(train or tmp_path / "train" / "grid.zarr"), str(out))


def _gram(good, data, tmp_path, train=None, gram=None, cfg=None):
    cfg = cfg or good["cfg"]
    return pipeline.assemble_gram(cfg, "grid", str(data), str(train or good["train"]),
                                  str(gram or tmp_path / "gram" / "grid.zarr"), str(tmp_path / "gram" / "grid.json"))


def _mutate_data(kind):
    def make(good, tmp_path):
        d = _copy_data(good, tmp_path)
        X = store.read_dataset(d).X
        if kind == "missing":
            shutil.rmtree(d)
        elif kind == "unreadable":
            (d / "zarr.json").write_text("{ not json")
        elif kind == "incomplete":
            meta = json.loads((d / "zarr.json").read_text())
            meta["attributes"].pop("complete")
            (d / "zarr.json").write_text(json.dumps(meta))
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
    from tfconv.mnist import idx_bytes

    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    img = idx_bytes(images)
    (raw / "train-images-idx3-ubyte").write_bytes(img[:3] if truncate else img)
    lab = labels if labels is not None else np.arange(images.shape[0]) % 10
    (raw / "train-labels-idx1-ubyte").write_bytes(idx_bytes(lab))
    return tmp_path / "mnist"


def _simulate(good, tmp_path, entry, name="m"):
    cfg = copy.deepcopy(good["cfg"])
    cfg["datasets"] = {name: entry}
    _exp(cfg)["dataset"] = name
    cfg = load_config(cfg)
    return pipeline.simulate_data(cfg, name, str(tmp_path / "out" / f"{name}.zarr"))


def case_step_size_changed(good, tmp_path):
    cfg = copy.deepcopy(good["cfg"])
    _exp(cfg)["train"]["step_size"] = 0.5
    train = tmp_path / "train.zarr"
    shutil.copytree(good["train"], train)
    return _train(good, good["data"], tmp_path, train=train, cfg=load_config(cfg))


def case_other_dataset(good, tmp_path):
    cfg = copy.deepcopy(good["cfg"])
    cfg["datasets"]["synth"]["seed"] = 1
    cfg = load_config(cfg)
    data = tmp_path / "other.zarr"
    pipeline.simulate_data(cfg, "synth", str(data))
    train = tmp_path / "train.zarr"
    shutil.copytree(good["train"], train)
    return _train(good, data, tmp_path, train=train, cfg=cfg)


def case_other_dataset_gram(good, tmp_path):
    cfg = copy.deepcopy(good["cfg"])
    cfg["datasets"]["synth"]["seed"] = 1
    cfg = load_config(cfg)
    data = tmp_path / "other.zarr"
    pipeline.simulate_data(cfg, "synth", str(data))
    return _gram(good, data, tmp_path, cfg=cfg)


def case_gram_block_size_changed(good, tmp_path):
    gram = tmp_path / "gram.zarr"
    rid = run_id(good["points"][0])
    store.ensure_gram(str(gram), rid, 0, 12, 3)  # an unfinished Gram started with blocks of 3
    return _gram(good, good["data"], tmp_path, gram=gram)


def case_fewer_samples_than_grid(good, tmp_path):
    small = copy.deepcopy(good["cfg"])
    small["datasets"]["synth"]["n_samples"] = 4
    small = load_config(small)
    data = tmp_path / "small.zarr"
    pipeline.simulate_data(small, "synth", str(data))
    cfg = copy.deepcopy(good["cfg"])
    _exp(cfg)["grid"]["n_samples"] = [6]
    return _train(good, data, tmp_path, cfg=load_config(cfg))


def _under_file(tmp_path):
    f = tmp_path / "a-file"
    f.write_text("not a folder")
    return f


# (id, action(good, tmp_path) raising, exception type, substrings of the message)
STEP_CASES = [
    ("dataset-store-missing", lambda g, t: _train(g, _mutate_data("missing")(g, t), t), store.StoreError,
     ["synth.zarr does not exist"]),
    ("dataset-store-unreadable", lambda g, t: _train(g, _mutate_data("unreadable")(g, t), t), store.StoreError,
     ["synth.zarr is not a readable Zarr group"]),
    ("dataset-store-incomplete", lambda g, t: _train(g, _mutate_data("incomplete")(g, t), t), store.StoreError,
     ["synth.zarr is incomplete"]),
    ("dataset-hash-mismatch", lambda g, t: _train(g, _mutate_data("hash")(g, t), t), store.StoreError,
     ["synth.zarr: content hash", "does not match the recorded"]),
    ("dataset-nan", lambda g, t: _train(g, _mutate_data("nan")(g, t), t), ValueError,
     ["synth.zarr: X contains 1 NaN/inf values", "every value must be finite"]),
    ("dataset-wrong-shape", lambda g, t: _train(g, _mutate_data("shape")(g, t), t), ValueError,
     ["synth.zarr: X must have shape (N, d_s, d)", "got shape (12, 32)"]),
    ("dataset-label-count", lambda g, t: _gram(g, _mutate_data("labels")(g, t), t), ValueError,
     ["synth.zarr: y must have shape (N, C) with N = 12", "(11, 1)"]),
    ("train-output-under-a-file", lambda g, t: _train(g, g["data"], t, train=_under_file(t) / "train" / "grid.zarr"),
     NotADirectoryError, ["a-file is a file, not a folder", "choose another `results` folder"]),
    ("gram-output-under-a-file", lambda g, t: _gram(g, g["data"], t, gram=_under_file(t) / "gram.zarr"),
     NotADirectoryError, ["a-file is a file, not a folder"]),
    ("dataset-output-under-a-file",
     lambda g, t: pipeline.simulate_data(g["cfg"], "synth", str(_under_file(t) / "synth.zarr")),
     NotADirectoryError, ["a-file is a file, not a folder"]),
    ("train-store-from-other-dataset", case_other_dataset, store.StoreError,
     ["train.zarr was trained on dataset sha256", "delete"]),
    ("train-store-other-step-size", case_step_size_changed, store.StoreError,
     ["was trained with step_size=1.0 (config: 0.5)"]),
    ("gram-from-train-of-other-dataset", case_other_dataset_gram, store.StoreError,
     ["was trained on dataset sha256"]),
    ("gram-before-training", lambda g, t: _gram(g, g["data"], t, train=t / "none.zarr"), store.StoreError,
     ["none.zarr does not exist; run the `train_grid` step first"]),
    ("gram-block-size-changed", case_gram_block_size_changed, store.StoreError,
     ["started with gram.block_size=3, the config now says 5"]),
    ("grid-n-samples-beyond-store", case_fewer_samples_than_grid, ConfigError,
     ["experiments.grid.grid.n_samples: 6 exceeds the dataset's 4 samples"]),
    ("unknown-experiment", lambda g, t: pipeline.train_grid(g["cfg"], "nope", str(g["data"]), str(t / "x.zarr"), str(t / "x.json")),
     ConfigError, ["experiment 'nope' is not in the config; defined: grid"]),
    ("unknown-dataset", lambda g, t: pipeline.simulate_data(g["cfg"], "nope", str(t / "x.zarr")), ConfigError,
     ["dataset 'nope' is not in the config; defined: synth"]),
    ("mnist-idx-files-missing", lambda g, t: _simulate(g, t, {"kind": "mnist", "source": "idx", "path": str(t)}),
     FileNotFoundError, ["MNIST IDX file 'train-images-idx3-ubyte' not found under", "MNIST/raw"]),
    ("mnist-idx-truncated", lambda g, t: _simulate(g, t, {"kind": "mnist", "source": "idx",
                                                          "path": str(_idx_folder(t, np.zeros((20, 28, 28), np.uint8), truncate=True))}),
     ValueError, ["train-images-idx3-ubyte is too short"]),
    ("mnist-idx-wrong-shape", lambda g, t: _simulate(g, t, {"kind": "mnist", "source": "idx",
                                                            "path": str(_idx_folder(t, np.zeros((20, 27, 27), np.uint8)))}),
     ValueError, ["holds images of shape (27, 27), not (28, 28)"]),
    ("mnist-idx-not-original", lambda g, t: _simulate(g, t, {"kind": "mnist", "source": "idx",
                                                             "path": str(_idx_folder(t, np.zeros((20, 28, 28), np.uint8)))}),
     Exception, ["md5 mismatch for MNIST IDX file", "train-images-idx3-ubyte"]),
    ("imdb-layout", lambda g, t: _simulate(g, t, {"kind": "text", "source": "imdb", "path": str(t)}, name="t"),
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
    assert not (tmp_path / "train" / "grid.json").exists() and not (tmp_path / "gram" / "grid.json").exists()
    assert time.time() - t0 < 30, f"{name}: rejected only after {time.time() - t0:.0f}s"


# ------------------------------------------------------------------------------------------------
# snakemake -n with a bad configfile: non-zero exit and the message, before any job
# ------------------------------------------------------------------------------------------------

@hard_timeout(180)
def test_snakemake_dry_run_rejects_bad_configfiles(tmp_path):
    bad = {
        "misspelt-init": (_set("experiments", "grid", "grid", "init", ["lecunn"]), "'lecunn' is not allowed (did you mean 'lecun'?)"),
        "checkpoint": (_set("experiments", "grid", "train", "checkpoint_epochs", [0, 31]), "epoch 31 is beyond the budget epochs=30"),
        "results-under-file": (_set("results", "a-file/results"), "is a file, not a folder"),
        "mnist-folder": (_set("datasets", "m", {"kind": "mnist", "source": "idx", "path": "/nonexistent/mnist"}),
                         "datasets.m.path: folder '/nonexistent/mnist' does not exist"),
    }
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    procs = {}
    for name, (mutate, _) in bad.items():
        wd = tmp_path / name
        wd.mkdir()
        (wd / "a-file").write_text("x")
        cfg = copy.deepcopy(BASE)
        mutate(cfg)
        (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
        cmd = ["timeout", "-k", "10", "150", str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), "--directory", str(wd),
               "--configfile", str(wd / "config.yaml"), "-n", "--cores", "1"]
        procs[name] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=170)
        assert proc.returncode not in (0, 124, 137), f"{name}: snakemake -n exited {proc.returncode}:\n{out[-3000:]}"
        assert bad[name][1] in out, f"{name}: message missing from snakemake's output:\n{out[-3000:]}"
        assert "invalid configuration" in out
        assert "Job stats" not in out and "rule make_dataset" not in out, f"{name}: jobs were planned:\n{out[-2000:]}"
        assert not (tmp_path / name / "results").exists()


# ------------------------------------------------------------------------------------------------
# tfconv verify on damaged results
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def results(tmp_path_factory, good):
    """A complete results folder (dataset, one run, its Grams) made in-process."""
    root = tmp_path_factory.mktemp("verify") / "results"
    shutil.copytree(good["root"] / "results" / "data", root / "data")
    shutil.copytree(good["train"], root / "train" / "grid.zarr")
    import zarr

    # as the workflow records it: relative to the folder the workflow runs in
    zarr.open_group(str(root / "train" / "grid.zarr"), mode="a").attrs["dataset_store"] = "results/data/synth.zarr"
    exp = _exp(good["cfg"])
    import torch

    threads = torch.get_num_threads()
    for p in good["points"]:
        rid = run_id(p)
        for e in (0, 5):
            grp = store.ensure_gram(str(root / "gram" / "grid.zarr"), rid, e, 12, 5)
            for bi, bj in store.upper_blocks(12, 5):
                runner.gram_block(exp, p, str(root / "data" / "synth.zarr"), str(root / "train" / "grid.zarr"),
                                  str(root / "gram" / "grid.zarr"), e, bi, bj, "structured", 5, 5, 1)
            store.finalize_gram(grp)
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
