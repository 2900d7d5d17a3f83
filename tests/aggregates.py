"""Tiny real aggregates shared by the analysis and figure tests (tests/analyses/test_stats.py,
tests/analyses/test_figures.py): real `train_gd` runs and exact NTK Grams (N = 8, widths 8/16/32, 30 epochs,
float64), built once per process (`tiny_aggregates` is cached).
"""
from __future__ import annotations

import functools

import numpy as np

from tfconv.config import DatasetSpec, Experiment, run_id
from tfconv.core.ntk import gram_eigenvalues, gram_statistics, ntk_matrix, params_from_numpy
from tfconv.core.train import TrainConfig, train_gd
from tfconv.data import make_synthetic
from tfconv.core.spectra import spectral_densities
from tfconv.store.aggregate import build_aggregate

D_S, D = 4, 8


def _exp(grid, epochs=30, checkpoints=(0, 30), name="tiny", n=8):
    return Experiment.from_section(name, {
        "grid": grid,
        "train": {"step_size": 1.0, "epochs": epochs, "loss": "mean", "checkpoint_epochs": list(checkpoints),
                  "dtype": "float64", "hidden": True, "divergence_factor": 1e6},
        "gram": True,
    }, DatasetSpec("synth", "synthetic", {"n_samples": n}))


def _record(r, spec=None, X=None, y=None, epochs=None):
    """A run as the aggregate step reads it, with the kernel quantities every run records."""
    curves = {"loss": r.loss, "weight_change": r.weight_change,
              "attention_deviation_mean": r.attention_deviation_mean,
              "attention_deviation_max": r.attention_deviation_max}
    curves.update({f"weight_change_{k}": v for k, v in r.weight_change_per.items()})
    curves.update(r.curves)
    out = {"status": r.status, "diverged_epoch": r.diverged_epoch, "stop_epoch": r.stop_epoch, "curves": curves}
    if spec is not None:
        from tfconv.core.kernel import init_kernel, kernel_changes

        ik = init_kernel(spec, X, y, params_from_numpy(r.checkpoints[0]), r.train.step_size, r.train.loss)
        curves["loss_linearised"] = ik.linearised(len(r.loss) - 1)
        out["kernel"] = ik.summary()
        out["mode_curves"] = ik.modes()
        out["checkpoint_curves"] = {"kernel_change": kernel_changes(spec, X, r.checkpoints, ik.K0, epochs)}
    return out


def _grams(r, spec, X, rid, grams, spectra=None):
    """Gram statistics per checkpoint; with ``spectra``, K_0's spectrum as `tfconv.store.read_spectrum`
    gives it, with both its eigenvalues and an SLQ density (`_density` keeps one of them)."""
    K0 = None
    for e, ck in sorted(r.checkpoints.items()):
        K = ntk_matrix(params_from_numpy(ck), spec, X, engine="exact")
        K0 = K if K0 is None else K0
        ev = gram_eigenvalues(K)
        grams[(rid, e)] = gram_statistics(K, ev, K0)
        if e == 0 and spectra is not None:
            from tfconv.core.spectra import slq_density

            spectra[rid] = {"lambda_min": float(ev[0]), "lambda_max": float(ev[-1]), "records": {},
                            "eigenvalues": ev, "slq": slq_density(K.__matmul__, K.shape[0], 4, K.shape[0])}


def _density(spectra, how):
    """The spectra as a Gram store would hold them: how(run_id) is "dense" (eigenvalues), "slq" or "none"."""
    out = {}
    for rid, sp in spectra.items():
        h = how(rid)
        out[rid] = dict(sp, eigenvalues=sp["eigenvalues"] if h == "dense" else None, slq=sp["slq"] if h == "slq" else None)
    return out


@functools.lru_cache(maxsize=None)
def tiny_aggregates():
    """(clean, broken, by_n): three small aggregates built from real runs.

    clean:  widths 8/16/32 x scaling inv_sqrt/inv x init lecun/ntk x seeds 0/1, with a test_accuracy curve.
    broken: the same with (32, inv_sqrt, lecun, seed 1) retrained at step 200 (diverges) and
            (16, inv, ntk, seed 0) missing.
    by_n:   n_samples 4/8/12 x widths 8/16 x seeds 0/1 (lecun, inv_sqrt), checkpoint 0 only.
    One torch thread: these tensors are tiny and extra threads only contend on a shared machine.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _build_tiny()
    finally:
        torch.set_num_threads(threads)


def _build_tiny():
    import torch

    from tfconv.core.model import forward

    # unit-norm tokens and a fixed step 1.0: small kernels, so one step size suits every width here
    data = make_synthetic(8, d_s=D_S, d=D, seed=0, token_norm=1.0)
    test = make_synthetic(8, d_s=D_S, d=D, seed=1, token_norm=1.0)
    exp = _exp({"width": [8, 16, 32], "scaling": ["inv_sqrt", "inv"], "init": ["lecun", "ntk"], "seed": [0, 1]})
    tc = exp.train
    runs, grams, spectra = {}, {}, {}

    for p in exp.points:
        spec = p.spec(data)
        Xt = torch.as_tensor(test.X)

        def eval_fn(params, epoch, spec=spec):
            pred = forward(params, Xt, spec.scales()).numpy()
            return {"test_accuracy": float((np.sign(pred) == np.sign(test.y)).mean())}

        r = train_gd(spec, data.X, data.y, p["seed"], tc.config(1.0), eval_fn=eval_fn)
        rid = p.run_id
        runs[rid] = _record(r, spec, data.X, data.y, exp.checkpoint_epochs)
        _grams(r, spec, data.X, rid, grams, spectra)
    clean = build_aggregate(exp, runs, grams, data.meta,
                            densities=spectral_densities(_density(spectra, lambda rid: "dense")))

    runs_b, grams_b = dict(runs), dict(grams)
    # broken: K_0's density from SLQ at width 32, none at width 8 (an iterative Gram without SLQ vectors)
    spectra_b = _density(spectra, lambda rid: "none" if rid.startswith("width=8_") else
                         "slq" if rid.startswith("width=32_") else "dense")
    p = exp.point({"width": 32, "scaling": "inv_sqrt", "init": "lecun", "seed": 1})
    spec = p.spec(data)
    r = train_gd(spec, data.X, data.y, 1, TrainConfig(step_size=200.0, epochs=30, checkpoint_epochs=(0, 30)))
    assert r.status == "diverged"
    rid = p.run_id
    runs_b[rid] = _record(r, spec, data.X, data.y, exp.checkpoint_epochs)
    grams_b.pop((rid, 30))
    _grams(r, spec, data.X, rid, grams_b)
    gone = run_id({"width": 16, "scaling": "inv", "init": "ntk", "seed": 0})
    del runs_b[gone]
    grams_b = {k: v for k, v in grams_b.items() if k[0] != gone}
    broken = build_aggregate(_exp(exp.to_dict()["grid"], name="tiny_broken"), runs_b, grams_b, data.meta,
                             densities=spectral_densities(spectra_b))

    big = make_synthetic(12, d_s=D_S, d=D, seed=0, token_norm=1.0)
    exp_n = _exp({"n_samples": [4, 8, 12], "width": [8, 16], "scaling": ["inv_sqrt"], "init": ["lecun"],
                  "seed": [0, 1]}, checkpoints=(0,), name="tiny_by_n", n=12)
    runs_n, grams_n = {}, {}
    for p in exp_n.points:
        sub = big.subset(p["n_samples"])
        spec = p.spec(sub)
        r = train_gd(spec, sub.X, sub.y, p["seed"], exp_n.train.config(1.0))
        runs_n[p.run_id] = _record(r, spec, sub.X, sub.y, exp_n.checkpoint_epochs)
        _grams(r, spec, sub.X, p.run_id, grams_n)
    by_n = build_aggregate(exp_n, runs_n, grams_n, big.meta)
    return clean, broken, by_n
