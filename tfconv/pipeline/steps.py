"""The workflow's steps as plain functions of (workflow, names): what each `tasks/*.py` calls.

    wf = load_workflow("config/config.yaml")        # validated once
    make_dataset(wf, "synthetic")                    # -> results/data/synthetic.zarr
    train_grid(wf, "synthetic", threads=2)           # -> results/train/synthetic.{zarr,json}
    assemble_gram(wf, "synthetic")                   # -> results/gram/synthetic.{zarr,json}
    aggregate(wf, "synthetic")                       # -> results/aggregate/synthetic.zarr
    plot(wf, "synthetic", "loss_per_width")          # -> results/figures/synthetic/loss_per_width.*
    tables(wf)                                       # -> results/tables/{claims,slopes}.{csv,html}

Orchestration only: which points, which stores, which cluster, progress and manifests.  Every path
comes from `wf.results` (`tfconv.store.Results`); the science lives in `tfconv.core` and
`tfconv.analyses`, the clusters in `tfconv.cluster`.  Every step checks its inputs before any
expensive work and writes its outputs atomically.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Dict

from .. import store
from ..config import ConfigError, Workflow
from ..core.status import STATUS_DIVERGED
from ..provenance import provenance
from .logs import log, task_log  # noqa: F401 (task_log re-exported for tasks/*.py)


def _check_writable(path) -> None:
    """Fail early, naming the folder, when outputs cannot be written under `path`."""
    probe = Path(path).resolve().parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {probe} is a file, not a folder; choose another `results` folder")
    if not os.access(probe, os.W_OK):
        raise PermissionError(f"cannot write {path}: folder {probe} is not writable; choose another `results` folder")


def _dataset_of(wf: Workflow, exp, verify: bool = True):
    """The experiment's dataset store, read once (content hash verified once per job)."""
    return store.read_dataset(wf.results.data(exp.dataset.name), verify=verify)


# ------------------------------------------------------------------------------------------------

def make_dataset(wf: Workflow, name: str) -> str:
    """Write dataset `name` to its Zarr store (generator settings, seed, content hash in attrs)."""
    from ..data import dataset_from_spec

    spec = wf.dataset(name)
    out = wf.results.data(name)
    _check_writable(out)
    t0 = time.time()
    ds = dataset_from_spec(spec)
    digest = store.write_dataset(out, ds, provenance(spec.to_dict(), dataset=name))
    log(f"[make_dataset] {name}: X {ds.X.shape}, y {ds.y.shape}, sha256 {digest[:16]}..., {time.time() - t0:.1f}s")
    return digest


def train_grid(wf: Workflow, name: str, threads: int = 1) -> Dict[str, Any]:
    """Train every grid point of experiment `name` on Ray (resuming), then write the manifest last."""
    from ..cluster.ray_grid import GridJob, RayTasks, run_grid
    from ..cluster.ray_slurm import ray_cluster_address

    exp = wf.experiment(name)
    res = wf.results
    data_store, train_store = res.data(exp.dataset.name), res.train(name)
    ds = _dataset_of(wf, exp)  # validates the data store before Ray starts
    digest = ds.meta["content_hash"]
    _check_writable(train_store)
    points = exp.points
    store.check_train_store(train_store, digest, exp.train.to_dict(), steps={p.run_id: p.step for p in points})
    for p in points:
        if p.n_samples > ds.n_samples:
            raise ConfigError(f"experiments.{name}.grid.n_samples: {p.n_samples} exceeds the dataset's {ds.n_samples} samples")
    store.ensure_train_store(train_store, {
        "experiment": name, "points": [p.as_dict() for p in points], "dataset_store": str(data_store),
        "dataset_sha256": digest, "checkpoint_epochs": exp.checkpoint_epochs,
        "gram": exp.gram, "epochs": exp.train.epochs,
    })
    # what is left to train is decided here, once
    todo = [p for p in points if not store.run_complete(train_store, p.run_id)]
    log(f"[train_grid] {name}: {len(points)} grid points, {len(points) - len(todo)} already complete, "
        f"{len(todo)} to train")
    rc = wf.ray
    t0 = time.time()
    # ray.slurm_allocation inside a SLURM job: a Ray cluster over the job's nodes, stopped on exit
    with ray_cluster_address(rc, needed=bool(todo), log=log) as address:
        results = run_grid(
            GridJob(exp, str(data_store), str(train_store), threads_per_run=wf.threads_per_run, expected_hash=digest),
            todo, address=address, num_cpus=max(1, int(threads)), log=log,
            tasks=RayTasks(cpus_per_task=rc["cpus_per_task"], gpus_per_task=rc["gpus_per_task"],
                           max_retries=rc["max_retries"], vectorise=rc["vectorise"]),
        )
    runs = {}
    for p in points:
        rid = p.run_id
        if not store.run_complete(train_store, rid):
            raise store.StoreError(f"run {rid} did not complete; see the log above")
        attrs = store.run_attrs(train_store, rid)
        runs[rid] = {"point": p.as_dict(), "status": attrs["status"], "diverged_epoch": attrs["diverged_epoch"],
                     "node_id": (attrs.get("provenance") or {}).get("node_id")}
    n_div = sum(r["status"] == STATUS_DIVERGED for r in runs.values())
    summary = {
        "experiment": name, "store": str(train_store), "n_runs": len(runs), "n_diverged": n_div,
        "trained_now": sorted(r["run_id"] for r in results if not r.get("skipped")),
        "nodes": sorted({str(r.get("node_id")) for r in results if r.get("node_id")}),
        "seconds": time.time() - t0, "runs": runs,
        "dataset_sha256": digest, "provenance": provenance(exp.to_dict(), experiment=name),
    }
    store.write_json_atomic(res.train_manifest(name), summary)
    log(f"[train_grid] {name}: {len(runs)} runs ({n_div} diverged), trained {len(summary['trained_now'])} now, "
        f"{summary['seconds']:.0f}s")
    return summary


def assemble_gram(wf: Workflow, name: str, threads: int = 1) -> Dict[str, Any]:
    """Assemble every Gram of experiment `name` with Dask into Zarr (resuming), then the manifest."""
    from ..cluster.dask_gram import assemble_grams, dask_client
    from ..runner import GramJob, GramSettings

    exp = wf.experiment(name)
    res = wf.results
    ds = _dataset_of(wf, exp)
    digest = ds.meta["content_hash"]
    gram_store = res.gram(name)
    _check_writable(gram_store)
    store.check_train_store(res.train(name), digest, exp.train.to_dict(), required=True)
    gcfg = wf.gram
    store.check_gram_store(gram_store, gcfg["block_size"])
    job = GramJob(exp, str(res.data(exp.dataset.name)), str(res.train(name)), str(gram_store),
                  GramSettings(engine=gcfg["engine"], block_size=int(gcfg["block_size"]),
                               chunk_size=int(gcfg["chunk_size"]), threads=int(wf.threads_per_run)),
                  expected_hash=digest)
    with dask_client(wf.dask, log=log, threads=threads) as client:
        info = assemble_grams(job, exp.points, client, spectrum=spectrum_settings(gcfg),
                              provenance=provenance(None, experiment=name), log=log, retries=wf.dask["retries"])
    info.update(experiment=name, store=str(gram_store), engine=gcfg["engine"], block_size=gcfg["block_size"])
    store.write_json_atomic(res.gram_manifest(name), info)
    return info


def spectrum_settings(gcfg):
    """The ``gram.spectrum_*`` settings as a `tfconv.cluster.dask_spectra.SpectrumSettings`."""
    from ..cluster.dask_spectra import SpectrumSettings

    return SpectrumSettings(dense_max=int(gcfg["spectrum_dense_max"]), tol=float(gcfg["spectrum_tolerance"]),
                            certificate_rtol=float(gcfg["spectrum_certificate_rtol"]),
                            slq_vectors=int(gcfg["spectrum_slq_vectors"]), slq_steps=int(gcfg["spectrum_slq_steps"]))


def aggregate(wf: Workflow, name: str) -> None:
    """Gather runs and Gram statistics of experiment `name` into one xarray dataset in Zarr."""
    from ..core.spectra import spectral_densities
    from ..analyses import get_analysis
    from ..store.aggregate import build_aggregate, write_aggregate

    exp = wf.experiment(name)
    res = wf.results
    data = _dataset_of(wf, exp, verify=False)
    train_store, gram_store = res.train(name), res.gram(name)
    runs, grams, spectra = {}, {}, {}
    for p in exp.points:
        rid = p.run_id
        r = store.read_run(train_store, rid)
        runs[rid] = {"status": r["attrs"]["status"], "diverged_epoch": r["attrs"]["diverged_epoch"],
                     "stop_epoch": r["attrs"].get("stop_epoch", -1), "curves": r["curves"],
                     "checkpoint_curves": r["checkpoint_curves"], "mode_curves": r.get("mode_curves", {}),
                     "kernel": r["attrs"].get("kernel")}
        ref = None  # K_0 when its Gram is published; statistics read K panel by panel, never whole
        for e in exp.gram_epochs:
            if not store.gram_complete(gram_store, rid, e):
                continue
            if e == 0:
                ref = 0
                spectra[rid] = store.read_spectrum(gram_store, rid, 0)  # K_0's eigenvalues or SLQ density
            grams[(rid, e)] = store.gram_statistics_stored(gram_store, rid, e, ref)
    xds = build_aggregate(exp, runs, grams, dict(data.meta), provenance(wf.config, experiment=name),
                          densities=spectral_densities(spectra))
    for analysis in exp.analyses:  # extra variables an analysis declares it needs
        hook = get_analysis(analysis).aggregate_vars
        for var, (dims, values, attrs) in (hook(data, exp) if hook else {}).items():
            xds[var] = (dims, values)
            xds[var].attrs.update(attrs)
    write_aggregate(res.aggregate(name), xds)
    log(f"[aggregate] {name}: {len(runs)} runs, {len(grams)} Gram matrices -> {res.aggregate(name)}")


def plot(wf: Workflow, name: str, analysis: str) -> Dict[str, Any]:
    """Draw one analysis figure of experiment `name` (PNG + the CSV of its numbers + its slopes)."""
    import pandas as pd

    from ..analyses import make_figure
    from ..store.aggregate import open_aggregate

    exp = wf.experiment(name)
    res = wf.results
    xds = open_aggregate(res.aggregate(name))
    settings = dict(wf.analysis, experiment=name, description=exp.description)
    out = make_figure(analysis, xds, res.figure(name, analysis, "png"), res.figure(name, analysis, "csv"), settings,
                      out_pdf=res.figure(name, analysis, "pdf"))
    rows = [dict(r, experiment=name, analysis=analysis) for r in out.get("slopes", [])]
    pd.DataFrame(rows, columns=sorted({k for r in rows for k in r}) or ["experiment", "analysis"]).to_csv(
        res.figure(name, analysis, "slopes"), index=False)
    res.figure(name, analysis, "finding").write_text(out.get("finding", "") + "\n")
    log(f"[plot] {name}/{analysis}: {out.get('finding', '')}")
    return out


def tables(wf: Workflow) -> None:
    """The claims table (each claim of the paper, measured, with a verdict) and all fitted slopes, as
    CSV (6 significant digits, slopes in reading order without duplicates) and as HTML for the report
    (3 significant digits, verdicts marked; `tfconv.pipeline.report_tables`)."""
    import pandas as pd

    from ..analyses.claims import claims_tested, evaluate_claims, synthesis, synthesis_markdown
    from ..store.aggregate import open_aggregate
    from .report_tables import claims_html, confidence_of, slopes_html, tidy_slopes, write_html

    res = wf.results
    xdss = {name: open_aggregate(res.aggregate(name)) for name in wf.experiments}
    claims = evaluate_claims(xdss, {n: claims_tested(e.analyses) for n, e in wf.experiments.items()}, wf.analysis,
                             controls={n: e.control for n, e in wf.experiments.items() if e.control})
    res.claims.parent.mkdir(parents=True, exist_ok=True)
    claims.to_csv(res.claims, index=False, float_format="%.6g")
    sentences = synthesis(claims)
    store.write_json_atomic(res.synthesis_json, sentences)
    store.write_text_atomic(res.synthesis, synthesis_markdown(sentences))
    slope_files = [res.figure(e, a, "slopes") for e, a in wf.figure_targets()]
    frames = [pd.read_csv(f) for f in slope_files if os.path.getsize(f) > 0]
    frames = [f for f in frames if len(f)]
    slopes = tidy_slopes(pd.concat(frames, ignore_index=True) if frames else None)
    slopes.to_csv(res.slopes, index=False, float_format="%.6g")
    confidence = confidence_of(wf.analysis)
    write_html(res.claims_html, claims_html(claims, confidence))
    write_html(res.slopes_html, slopes_html(slopes, confidence))
    from .verify import file_sha256

    store.write_json_atomic(res.tables_manifest, {p.name: file_sha256(p) for p in (res.claims, res.slopes, res.synthesis)})
    counts = claims["verdict"].value_counts().to_dict()
    log(f"[tables] {len(claims)} claim rows: " + ", ".join(f"{k} {v}" for k, v in counts.items())
        + f"; {len(slopes)} slopes -> {res.claims.parent}/{{claims,slopes}}.{{csv,html}}, synthesis.md")
    for s in sentences:
        log(f"[tables] {s['sentence']}")


def workflow_of(sm) -> Workflow:
    """The typed `Workflow` of a Snakemake job (the ``snakemake`` object of a `script:` directive).

    workflow/rules/common.smk validated the config when the Snakefile was parsed and replaced
    Snakemake's config by the validated one (defaults filled), so the job types it without
    validating a second time: one validation per job.
    """
    return Workflow.from_config(dict(sm.config))
