"""One labelled dataset per experiment: every run's curves and Gram statistics on the grid axes.

Layout (xarray.Dataset; written to ``results/aggregate/<experiment>.zarr``, open with xarray.open_zarr):

dims    the grid axes that the experiment has, in the order of `tfconv.config.GRID_AXES`
        (n_samples, width, scaling, init, seed), plus ``epoch`` (0..epochs) and ``checkpoint_epoch``.
coords  one per dim; ``scaling`` holds strings ("inv_sqrt", "inv" or a number written as text).
vars    over (axes..., epoch):  loss, loss_linearised (the kernel's prediction), weight_change,
                                weight_change_<W> for each weight matrix, attention_deviation_mean,
                                attention_deviation_max, and any extra curves a run recorded
                                (train_accuracy, test_accuracy, ...)
        over (axes..., checkpoint_epoch):  lambda_min, lambda_max, kernel_trace (of K_t; at epoch 0
                                from the run's own K_0 when there is no Gram store) and
                                kernel_change = |K_t - K_0|_F / |K_0|_F (from the run);
                                lambda_min_error and lambda_min_verdict ("resolved" / "below the
                                precision of K", "" where unknown) of lambda_min, and, when some Gram
                                certified it (iterative spectra), lambda_min_bracket_low / _high
        over (axes...):          eta (the step of the run), step_limit (2N / lambda_max(K_0)),
                                status ("complete", "diverged", "kernel_only", "missing"), diverged_epoch
        over (axes..., spectrum_bin), when some K_0 Gram stored its eigenvalues or an SLQ density:
                                spectral_density_K0 (fraction of the eigenvalues of K_0 per bin; bins
                                log-spaced over [min lambda_min, max lambda_max] of those K_0, centres
                                in the coord spectrum_bin, edges in its attribute bin_edges), and over (axes...)
                                spectral_density_method ("dense": the stored eigenvalues, "slq": the
                                stored quadrature nodes and weights, "none")
attrs   experiment, description, dataset (the dataset's settings and content hash), train (the GD
        settings), step (the configured step), epochs, loss, provenance (config, versions, git
        revision, host, time), content_sha256.  dataset, train and provenance are mappings stored as
        JSON strings, so that every attribute is a string or a number and ``xds.to_netcdf(path)``
        writes the aggregate (read them with `tfconv.analyses.stats.attr_dict`, or json.loads).
Every variable carries long_name, units and description (`VARIABLES`), every coordinate long_name and
description, and units where it has them (`COORDINATES`): CF-style attributes.

Entries of runs that diverged are NaN after the divergence epoch; missing runs are all NaN.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ..core.model import PARAM_NAMES
from ..core.status import STATUS_MISSING
from ._zarr import commit, json_safe, staging_dir

CURVE_VARS = ("loss", "loss_linearised", "weight_change", "attention_deviation_mean", "attention_deviation_max")
GRAM_VARS = ("lambda_min", "lambda_max", "kernel_trace")
CHECKPOINT_VARS = GRAM_VARS + ("kernel_change",)
#: lambda_min's error estimate and certificate bracket (`tfconv.store.lambda_min_assessment`), and its verdict
ASSESSMENT_VARS = ("lambda_min_error", "lambda_min_bracket_low", "lambda_min_bracket_high")
VERDICT_VAR = "lambda_min_verdict"
RUN_VARS = ("eta", "step_limit")
#: K_0's modes per run (dim ``mode``, ascending eigenvalues, NaN-padded to the largest N of the experiment)
MODE_VARS = ("k0_eigenvalues", "k0_projection")

#: name -> (long_name, units, description) of every variable an aggregate may hold (one definition).
VARIABLES: Dict[str, Tuple[str, str, str]] = {
    "loss": ("training loss", "1", "the configured loss at theta_t before the t-th update"),
    "loss_linearised": ("linearised loss", "1", "loss of GD on the model linearised at theta_0: "
                        "1/(2N) sum_i (1 - eta lambda_i / N)^(2t) (u_i^T r_0)^2 (mean loss), from K_0"),
    "weight_change": ("weight change", "1", "|theta_t - theta_0|_F / |theta_0|_F over all weights"),
    "attention_deviation_mean": ("attention deviation (mean)", "1", "mean over samples and entries of |A - 1/d_s|"),
    "attention_deviation_max": ("attention deviation (max)", "1", "max over samples and entries of |A - 1/d_s|"),
    "train_accuracy": ("train accuracy", "1", "fraction of training samples with argmax f(X) = label"),
    "test_accuracy": ("test accuracy", "1", "fraction of test samples with argmax f(X) = label"),
    "lambda_min": ("lambda_min(K_t)", "1", "smallest eigenvalue of the empirical NTK K_t = J_t J_t^T (output-averaged)"),
    "lambda_max": ("lambda_max(K_t)", "1", "largest eigenvalue of the empirical NTK K_t"),
    "kernel_trace": ("trace(K_t)", "1", "trace of the empirical NTK K_t"),
    "kernel_change": ("NTK change", "1", "|K_t - K_0|_F / |K_0|_F, K_t = J_t J_t^T (output-averaged)"),
    "lambda_min_error": ("error of lambda_min(K_t)", "1", "rounding of K (eps_K N max diag K, K computed in the "
                         "Gram precision) plus the solver's error (dense: eps_64 lambda_max; iterative: the residual)"),
    "lambda_min_verdict": ("verdict on lambda_min(K_t)", "", "resolved (value > error) or below the precision of K; "
                           "empty where not recorded"),
    "lambda_min_bracket_low": ("certified lower bound of lambda_min(K_t)", "1",
                               "largest sigma at which the Cholesky of K - sigma I succeeded (iterative spectra)"),
    "lambda_min_bracket_high": ("certified upper bound of lambda_min(K_t)", "1",
                                "smallest of the failed Cholesky shifts and the Rayleigh quotient of lambda_min's "
                                "vector (iterative spectra)"),
    "eta": ("step size eta", "1", "the GD step of the run: the configured fixed step, or c times its stability limit"),
    "step_limit": ("stability limit", "1", "2N / lambda_max(K_0) (mean loss; 2 / lambda_max for the sum loss)"),
    "status": ("status", "", "complete, diverged, kernel_only or missing"),
    "spectral_density_K0": ("spectral density of K_0", "1", "fraction of the eigenvalues of K_0 in each log-spaced "
                            "bin: the stored eigenvalues (dense Grams) or the stored stochastic-Lanczos-quadrature "
                            "nodes and weights (iterative Grams)"),
    "spectral_density_method": ("spectral density method", "", "dense (stored eigenvalues), slq (stochastic "
                                "Lanczos quadrature) or none (the Gram stored neither)"),
    "diverged_epoch": ("divergence epoch", "epoch", "epoch at which a diverged run stopped (-1: none)"),
    "stop_epoch": ("stop epoch", "epoch", "epoch at which a run reached the float floor L_t <= 1e-10 L_0 and stopped "
                   "(-1: it trained the whole budget); its later records are NaN"),
    "k0_eigenvalues": ("eigenvalues of K_0", "1", "the eigenvalues lambda_i of the run's empirical NTK at initialisation, "
                       "ascending (float64; NaN beyond the run's N)"),
    "k0_projection": ("residual weight per mode", "1", "p_i = sum_c (u_i^T r_0c)^2: the initial residual r_0 = f_0 - y on "
                      "each eigenvector of K_0; the linearised loss is L_t = 1/(2N) sum_i p_i (1 - eta lambda_i/N)^(2t)"),
}


#: name -> (long_name, units or None, description) of every coordinate (CF-style; no units for a label).
COORDINATES: Dict[str, Tuple[str, Optional[str], str]] = {
    "n_samples": ("number of training samples N", "1", "the first N samples of the experiment's dataset"),
    "width": ("width d_m", "1", "width of the attention and feed-forward layers"),
    "scaling": ("softmax scaling tau0", None, "inv_sqrt: tau0 = d_m^-1/2; inv: tau0 = d_m^-1; a number: tau0 itself"),
    "init": ("initialisation", None, "lecun, he or ntk (the variances of docs/science.md, section 2)"),
    "step_size": ("step setting", None, "a fixed step eta (a number); '<c>limit': c times the run's own stability "
                  "limit 2N / lambda_max(K_0); '<c>common': c times the smallest limit among the settings compared"),
    "seed": ("seed", None, "seed of the initialisation (the dataset has its own)"),
    "epoch": ("epoch", "1", "number of full-batch gradient-descent updates before the record"),
    "checkpoint_epoch": ("checkpoint epoch", "1", "epoch of a checkpoint: parameters saved, K_t and its statistics"),
    "mode": ("mode index of K_0", None, "index of an eigenvalue of K_0 in ascending order (0: lambda_min); "
             "the dimension of k0_eigenvalues and k0_projection"),
    "spectrum_bin": ("eigenvalue of K_0 (bin centre)", "1", "geometric centre of a log-spaced bin of eigenvalues of "
                     "K_0; the edges are the attribute bin_edges of spectral_density_K0"),
}


def _describe(ds) -> None:
    for name, (long_name, units, description) in COORDINATES.items():
        if name in ds.coords:
            ds[name].attrs.update(long_name=long_name, description=description, **({"units": units} if units else {}))
    for name in ds.data_vars:
        base = name
        if name.startswith("weight_change_"):
            base = "weight_change"
        if base in VARIABLES:
            long_name, units, description = VARIABLES[base]
            if base != name:
                long_name, description = f"{long_name} of {name[len(base) + 1:]}", description.replace("all weights", name[len(base) + 1:])
            ds[name].attrs.update(long_name=long_name, units=units, description=description)


def build_aggregate(
    exp,
    runs: Mapping[str, Mapping[str, Any]],
    grams: Optional[Mapping[Tuple[str, int], Mapping[str, float]]] = None,
    dataset_meta: Optional[Mapping[str, Any]] = None,
    provenance: Optional[Mapping[str, Any]] = None,
    densities=None,
):
    """Assemble the xarray.Dataset of one experiment.

    exp:   the `tfconv.config.Experiment`
    runs:  run_id -> {"status", "diverged_epoch", "curves": {name: 1-D array (epochs+1)},
                      "checkpoint_curves": {"kernel_change": array over exp.checkpoint_epochs},
                      "mode_curves": {"k0_eigenvalues", "k0_projection": arrays over K_0's modes},
                      "stop_epoch": epoch the run stopped at the float floor (-1: none),
                      "kernel": {"lambda_min0", "lambda_max0", "eta", "step_limit", ...}}
    grams: (run_id, checkpoint_epoch) -> {"lambda_min", "lambda_max", "kernel_trace"} (Gram store)
    lambda_min / lambda_max at checkpoint 0 come from the Gram store when it has them, else from the
    run's own K_0 (the same matrix, computed in the run).
    densities: the spectral densities of the runs' K_0 (`tfconv.core.spectra.spectral_densities` of
    their `tfconv.store.read_spectrum`, keyed by run_id): placed on the grid, not computed here.
    """
    import xarray as xr

    grams = grams or {}
    axes = exp.axes
    coords: Dict[str, Any] = {}
    for a in axes:
        vals = list(exp.grid[a])
        coords[a] = [str(v) for v in vals] if a in ("scaling", "step_size") else vals
    epochs = int(exp.train.epochs)
    ckpts = list(exp.checkpoint_epochs)
    coords["epoch"] = np.arange(epochs + 1)
    coords["checkpoint_epoch"] = np.asarray(ckpts, dtype=int)
    shape = tuple(len(coords[a]) for a in axes)

    curve_names: List[str] = list(CURVE_VARS) + [f"weight_change_{k}" for k in PARAM_NAMES]
    for r in runs.values():
        for k in r.get("curves", {}):
            if k not in curve_names:
                curve_names.append(k)
    curves = {k: np.full(shape + (epochs + 1,), np.nan) for k in curve_names}
    cvars = {k: np.full(shape + (len(ckpts),), np.nan) for k in CHECKPOINT_VARS + ASSESSMENT_VARS}
    verdict = np.full(shape + (len(ckpts),), "", dtype=object)
    rvars = {k: np.full(shape, np.nan) for k in RUN_VARS}
    status = np.full(shape, STATUS_MISSING, dtype=object)
    div_epoch = np.full(shape, -1, dtype=np.int64)
    stop_epoch = np.full(shape, -1, dtype=np.int64)
    n_modes = max((len(v) for r in runs.values() for v in (r.get("mode_curves") or {}).values()), default=0)
    mvars = {k: np.full(shape + (n_modes,), np.nan) for k in MODE_VARS} if n_modes else {}

    for index in np.ndindex(*shape):
        rid = exp.point({a: exp.grid[a][i] for a, i in zip(axes, index)}).run_id
        r = runs.get(rid)
        if r is None:
            continue
        status[index] = r["status"]
        div_epoch[index] = int(r.get("diverged_epoch", -1))
        stop_epoch[index] = int(r.get("stop_epoch", -1))
        for k, v in (r.get("mode_curves") or {}).items():  # padded with NaN up to the largest N
            if k in mvars:
                mvars[k][index][: len(v)] = np.asarray(v, dtype=float)
        for k, v in r.get("curves", {}).items():
            v = np.asarray(v, dtype=float)
            curves[k][index][: len(v)] = v
        kern = r.get("kernel") or {}
        for k in RUN_VARS:
            rvars[k][index] = float(kern.get(k, np.nan))
        kc = (r.get("checkpoint_curves") or {}).get("kernel_change")
        if kc is not None:
            cvars["kernel_change"][index][: len(kc)] = np.asarray(kc, dtype=float)
        for ci, e in enumerate(ckpts):
            g = grams.get((rid, e))
            if g is not None:
                for k in GRAM_VARS + ASSESSMENT_VARS:
                    cvars[k][index + (ci,)] = float(g.get(k, np.nan))
                verdict[index + (ci,)] = str(g.get(VERDICT_VAR, ""))
            elif e == 0 and kern:
                cvars["lambda_min"][index + (ci,)] = float(kern.get("lambda_min0", np.nan))
                cvars["lambda_max"][index + (ci,)] = float(kern.get("lambda_max0", np.nan))
                cvars["lambda_min_error"][index + (ci,)] = float(kern.get("lambda_min0_error", np.nan))
                verdict[index + (ci,)] = str(kern.get("lambda_min0_verdict", ""))

    data_vars = {k: (axes + ["epoch"], v) for k, v in curves.items() if not np.all(np.isnan(v)) or k in CURVE_VARS}
    data_vars.update({k: (axes + ["checkpoint_epoch"], v) for k, v in cvars.items()
                      if k not in ASSESSMENT_VARS or not np.all(np.isnan(v))})  # the assessment only when recorded
    if np.any(verdict != ""):
        data_vars[VERDICT_VAR] = (axes + ["checkpoint_epoch"], verdict.astype(str))
    data_vars.update({k: (axes, v) for k, v in rvars.items()})
    data_vars["status"] = (axes, status.astype(str))
    data_vars["diverged_epoch"] = (axes, div_epoch)
    data_vars["stop_epoch"] = (axes, stop_epoch)
    data_vars.update({k: (axes + ["mode"], v) for k, v in mvars.items()})
    if mvars:
        coords["mode"] = np.arange(n_modes)
    dens = _place_densities(exp, densities, shape)
    if dens is not None:
        values, method, low, high = dens
        data_vars["spectral_density_K0"] = (axes + ["spectrum_bin"], values)
        data_vars["spectral_density_method"] = (axes, method)
        coords["spectrum_bin"] = np.sqrt(low * high)  # geometric centres; the edges are an attribute
    ds = xr.Dataset(data_vars=data_vars, coords=coords)
    tr = exp.to_dict()["train"]
    ds.attrs.update(
        experiment=exp.name,
        description=exp.description,
        dataset=_json_attr(dataset_meta),
        train=_json_attr(tr),
        step=str(tr["step_size"]),
        epochs=int(tr["epochs"]),
        loss=str(tr["loss"]),
        provenance=_json_attr(provenance),
    )
    _describe(ds)
    if dens is not None:  # an attribute, not two more arrays (files) per aggregate
        ds["spectral_density_K0"].attrs["bin_edges"] = [float(x) for x in np.append(dens[2], dens[3][-1])]
    ds["loss"].attrs["definition"] = {
        "mean": "1/(2N) sum_n |f(X_n)-y_n|^2", "sum": "1/2 sum_n |f(X_n)-y_n|^2",
        "cross_entropy": "-1/N sum_n <y_n, log softmax f(X_n)>",
    }[tr["loss"]]
    return ds


def _json_attr(mapping: Optional[Mapping[str, Any]]) -> str:
    """A mapping as an attribute every format can store (netCDF holds strings and numbers, not mappings)."""
    import json

    return json.dumps(json_safe(dict(mapping or {})), sort_keys=True)


def _place_densities(exp, densities, shape: Tuple[int, ...]):
    """(density (shape + (bins,)), method (shape), bin low edges, bin high edges): the densities
    (`tfconv.core.spectra.SpectralDensities`, computed by the caller) placed on the grid, NaN and
    "none" where a run has none; None without densities."""
    if densities is None:
        return None
    edges = np.asarray(densities.edges)
    axes = exp.axes
    values = np.full(shape + (edges.size - 1,), np.nan)
    method = np.full(shape, "none", dtype=object)
    for index in np.ndindex(*shape):
        rid = exp.point({a: exp.grid[a][i] for a, i in zip(axes, index)}).run_id
        if rid in densities.values:
            method[index] = densities.methods[rid]
            values[index] = densities.values[rid]
    return values, method.astype(str), edges[:-1], edges[1:]


def aggregate_digest(xds) -> str:
    """sha256 over every variable of an aggregate (values as written), in name order."""
    from ..data.dataset import content_hash

    arrays = []
    for name in sorted(xds.data_vars):
        v = np.asarray(xds[name].values)
        arrays.append(np.char.encode(v.astype(str)) if v.dtype.kind in "OU" else v)
    return content_hash(*arrays)


def write_aggregate(path, xds) -> None:
    """Write the aggregate dataset to Zarr atomically (staging folder + rename), with its digest."""
    from pathlib import Path

    xds = xds.copy()
    xds.attrs["content_sha256"] = aggregate_digest(xds)
    final = Path(path)
    staging = staging_dir(final)
    # consolidated metadata: xarray.open_zarr reads it in one go, without warnings, and ignores the
    # timestamp file Snakemake leaves in directory outputs
    xds.to_zarr(str(staging), mode="w", consolidated=True, zarr_format=3)
    commit(staging, final)


def open_aggregate(path):
    """The aggregate of one experiment as an xarray.Dataset loaded into memory."""
    import xarray as xr

    return xr.open_zarr(str(path)).load()
