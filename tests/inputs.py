"""Shared inputs of the bad-input tests (test_config, test_step_inputs, test_verify): a small valid
config and mutations of it, and a tiny trained results folder made in-process."""
from __future__ import annotations

import copy
from pathlib import Path

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



def trained_results(root: Path, seeds=(0,)):
    """A valid config whose results folder `root` holds its dataset and a tiny trained store (width 4,
    the given seeds, 5 epochs, checkpoints 0 and 5), made in-process.  Returns (workflow, points)."""
    import torch

    from tfconv import runner, store
    from tfconv.config import load_workflow
    from tfconv.pipeline import steps

    cfg = copy.deepcopy(BASE)
    cfg["results"] = str(root)
    _exp(cfg)["grid"] = {"width": [4], "seed": list(seeds)}
    _exp(cfg)["train"] = {"step_size": 1.0, "epochs": 5, "checkpoint_epochs": [0, 5]}
    _exp(cfg)["analyses"] = []
    wf = load_workflow(cfg)
    steps.make_dataset(wf, "synth")
    data, train = wf.results.data("synth"), wf.results.train("grid")
    exp = wf.experiment("grid")
    points = exp.points
    store.ensure_train_store(str(train), {"points": [p.as_dict() for p in points], "dataset_sha256": store.dataset_hash(data),
                                          "dataset_store": str(data), "gram": True, "checkpoint_epochs": [0, 5]})
    threads = torch.get_num_threads()
    for p in points:
        runner.train_point(exp, p, str(data), str(train), threads=1)
    torch.set_num_threads(threads)
    return wf, points


def unpack_run(run_file: Path, folder: Path) -> Path:
    """Extract a run file (runs/<rid>.zip, a zipped Zarr group) into `folder` to read or damage it."""
    import zipfile

    with zipfile.ZipFile(run_file) as zf:
        zf.extractall(folder)
    return folder


def repack_run(folder: Path, run_file: Path) -> None:
    """Write `folder` back as the run file (what a corruption on disk would leave)."""
    import shutil
    import zipfile

    run_file.unlink(missing_ok=True)
    with zipfile.ZipFile(run_file, "w") as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(folder).as_posix())
    shutil.rmtree(folder)


def run_member(run_file: Path, name: str) -> bytes:
    """One file of a run (e.g. ``loss/c/0``, the loss curve's chunk) as bytes."""
    import zipfile

    with zipfile.ZipFile(run_file) as zf:
        return zf.read(name)
