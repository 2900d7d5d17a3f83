"""One labelled dataset per experiment: every run's curves and Gram statistics on the grid axes.

Layout (xarray.Dataset; written to ``results/aggregate/<experiment>.zarr``, open with xarray.open_zarr):

dims    the grid axes that the experiment has, in the order of `tfconv.config.GRID_AXES`
        (n_samples, width, scaling, init, seed), plus ``epoch`` (0..epochs) and ``checkpoint_epoch``.
coords  one per dim; ``scaling`` holds strings ("inv_sqrt", "inv" or a number written as text).
vars    over (axes..., epoch):  loss, weight_change, weight_change_<W> for each weight matrix,
                                attention_deviation_mean, attention_deviation_max, and any extra
                                curves a run recorded (train_accuracy, test_accuracy, ...)
        over (axes..., checkpoint_epoch):  lambda_min, lambda_max, kernel_trace (of K_t) and
                                kernel_change = |K_t - K_0|_F / |K_0|_F
        over (axes...):          status ("complete", "diverged", "missing"), diverged_epoch
attrs   experiment, description, dataset (JSON of the dataset's settings and content hash),
        train (JSON of the GD settings), step_size, epochs, loss, provenance (JSON).

Entries of runs that diverged are NaN after the divergence epoch; missing runs are all NaN.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ..core.model import PARAM_NAMES
from ._zarr import commit, staging_dir

CURVE_VARS = ("loss", "weight_change", "attention_deviation_mean", "attention_deviation_max")
GRAM_VARS = ("lambda_min", "lambda_max", "kernel_trace", "kernel_change")


def build_aggregate(
    exp,
    runs: Mapping[str, Mapping[str, Any]],
    grams: Optional[Mapping[Tuple[str, int], Mapping[str, float]]] = None,
    dataset_meta: Optional[Mapping[str, Any]] = None,
    provenance: Optional[Mapping[str, Any]] = None,
):
    """Assemble the xarray.Dataset of one experiment.

    exp:   the `tfconv.config.Experiment`
    runs:  run_id -> {"status": str, "diverged_epoch": int, "curves": {name: 1-D array (epochs+1)}}
    grams: (run_id, checkpoint_epoch) -> {"lambda_min", "lambda_max", "kernel_trace", "kernel_change"}
    """
    import xarray as xr

    grams = grams or {}
    axes = exp.axes
    coords: Dict[str, Any] = {}
    for a in axes:
        vals = list(exp.grid[a])
        coords[a] = [str(v) for v in vals] if a == "scaling" else vals
    epochs = int(exp.train.epochs)
    ckpts = exp.gram_epochs
    coords["epoch"] = np.arange(epochs + 1)
    coords["checkpoint_epoch"] = np.asarray(ckpts, dtype=int)
    shape = tuple(len(coords[a]) for a in axes)

    curve_names: List[str] = list(CURVE_VARS) + [f"weight_change_{k}" for k in PARAM_NAMES]
    for r in runs.values():
        for k in r.get("curves", {}):
            if k not in curve_names:
                curve_names.append(k)
    curves = {k: np.full(shape + (epochs + 1,), np.nan) for k in curve_names}
    gvars = {k: np.full(shape + (len(ckpts),), np.nan) for k in GRAM_VARS}
    status = np.full(shape, "missing", dtype=object)
    div_epoch = np.full(shape, -1, dtype=np.int64)

    for index in np.ndindex(*shape):
        rid = exp.point({a: exp.grid[a][i] for a, i in zip(axes, index)}).run_id
        r = runs.get(rid)
        if r is None:
            continue
        status[index] = r["status"]
        div_epoch[index] = int(r.get("diverged_epoch", -1))
        for k, v in r.get("curves", {}).items():
            v = np.asarray(v, dtype=float)
            curves[k][index][: len(v)] = v
        for ci, e in enumerate(ckpts):
            g = grams.get((rid, e))
            if g is None:
                continue
            for k in GRAM_VARS:
                gvars[k][index + (ci,)] = float(g.get(k, np.nan))

    data_vars = {k: (axes + ["epoch"], v) for k, v in curves.items() if not np.all(np.isnan(v)) or k in CURVE_VARS}
    data_vars.update({k: (axes + ["checkpoint_epoch"], v) for k, v in gvars.items()})
    data_vars["status"] = (axes, status.astype(str))
    data_vars["diverged_epoch"] = (axes, div_epoch)
    ds = xr.Dataset(data_vars=data_vars, coords=coords)
    tr = exp.to_dict()["train"]
    ds.attrs.update(
        experiment=exp.name,
        description=exp.description,
        dataset=json.dumps(dict(dataset_meta or {}), default=str, sort_keys=True),
        train=json.dumps(dict(tr), default=str, sort_keys=True),
        step_size=float(tr["step_size"]),
        epochs=int(tr["epochs"]),
        loss=str(tr["loss"]),
        provenance=json.dumps(dict(provenance or {}), default=str, sort_keys=True),
    )
    for k in CURVE_VARS:
        ds[k].attrs["long_name"] = k.replace("_", " ")
    ds["weight_change"].attrs["definition"] = "|theta_t - theta_0|_F / |theta_0|_F"
    ds["kernel_change"].attrs["definition"] = "|K_t - K_0|_F / |K_0|_F, K_t = J_t J_t^T (output-averaged)"
    ds["loss"].attrs["definition"] = {
        "mean": "1/(2N) sum_n |f(X_n)-y_n|^2", "sum": "1/2 sum_n |f(X_n)-y_n|^2",
        "cross_entropy": "-1/N sum_n <y_n, log softmax f(X_n)>",
    }[tr["loss"]]
    return ds


def write_aggregate(path, xds) -> None:
    """Write the aggregate dataset to Zarr atomically (staging folder + rename)."""
    from pathlib import Path

    final = Path(path)
    staging = staging_dir(final)
    xds.to_zarr(str(staging), mode="w", consolidated=False, zarr_format=3)
    commit(staging, final)


def open_aggregate(path):
    """The aggregate of one experiment as an xarray.Dataset loaded into memory."""
    import xarray as xr

    return xr.open_zarr(str(path), consolidated=False).load()
