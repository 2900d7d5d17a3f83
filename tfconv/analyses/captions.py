"""Every value the report's captions print, built from the typed experiment and the analysis settings.

The Snakemake report renders ``workflow/report/figure.rst`` (one per figure), ``claims.rst`` and
``slopes.rst`` (the tables) with the values that `workflow/rules/figures.smk` passes in as ``params``;
the templates print them and hold no setting or default of their own.

    figure_caption_values(exp, "loss_per_width", wf.analysis)
        -> {"setting": "**Setting.** Experiment ...", "caption": <the registry's caption, filled>,
            "confidence": "95.0"}
    tables_caption_values(wf.analysis) -> {"confidence": "95.0", "min_effect": "10", "power_level": "0.01", ...}
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional

from ..config import AXIS_DEFAULTS, Experiment, analysis_settings

#: The loss of each ``train.loss`` as the caption writes it.
LOSS_TEXT = {
    "mean": "mean loss ``L = 1/(2N) sum_n |f(X_n) - y_n|^2``",
    "sum": "sum loss ``L = 1/2 sum_n |f(X_n) - y_n|^2``",
    "cross_entropy": "cross-entropy loss ``L = -1/N sum_n <y_n, log softmax f(X_n)>``",
}


def _join(values: Iterable[Any]) -> str:
    return ", ".join(str(v) for v in values)


def confidence_percent(settings: Optional[Mapping[str, Any]] = None) -> str:
    """The intervals' level in percent as the captions print it ("95.0")."""
    return str(round(float(analysis_settings(settings)["confidence"]) * 100, 1))


def _data_text(exp: Experiment) -> str:
    """What the experiment's dataset is: N, tokens and features, per kind."""
    kind, d = exp.dataset.kind, exp.dataset.settings
    if kind == "mnist":
        p = int(d["patch_size"])
        return (f"N = {d['n_train']} training images\n(test subset {d['n_test']}), {p}x{p} patches as tokens, so "
                f"d_s = {(28 // p) * (28 // p)} tokens of\nd = {p * p} features, {len(d['classes'])} outputs")
    if kind == "text":
        return (f"N = {d['n_samples']}\nreviews ({d['source']}), d_s = {d['d_s']} word tokens of d = {d['d']} "
                "features\n(fixed random word embeddings)")
    return (f"N = {d['n_samples']} synthetic samples of d_s = {d['d_s']}\ni.i.d. Gaussian tokens normalised to norm "
            f"{d['token_norm']} in d = {d['d']} dimensions, {d['label_kind']}\nlabels")


def setting_text(exp: Experiment) -> str:
    """The caption's "Setting." paragraph (reStructuredText): dataset, grid and training of `exp`."""
    def axis(name):
        return exp.grid.get(name, (AXIS_DEFAULTS[name],))

    tr = exp.train
    lines = [
        f"**Setting.** Experiment ``{exp.name}``" + (f" ({exp.description})" if exp.description else "")
        + " on dataset",
        f"``{exp.dataset.name}`` of kind {exp.dataset.kind}:",
        _data_text(exp) + ".",
        f"Grid: width d_m in {_join(exp.grid['width'])}; scaling tau0 in {_join(axis('scaling'))}",
        f"(inv_sqrt: d_m^-1/2, inv: d_m^-1); init in {_join(axis('init'))};",
        f"{len(axis('seed'))} seed(s)" + (f"; n_samples in {_join(exp.grid['n_samples'])}" if exp.grid.get("n_samples")
                                          else "") + ".",
        (f"Full-batch gradient descent with step size {exp.steps[0]} for {tr.epochs} epochs" if len(exp.steps) == 1 else
         f"Full-batch gradient descent with step sizes {_join(exp.steps)} (grid axis step_size) for {tr.epochs} epochs"),
        f"({exp.dtype}" + ("" if exp.hidden else ", no hidden layer W_h") + ") on the",
        LOSS_TEXT[tr.loss] + ";",
        f"a run whose loss exceeds {tr.divergence_factor} times its initial loss is stopped as diverged.",
    ]
    return "\n".join(lines)


def analysis_caption(exp: Experiment, analysis: str, settings: Optional[Mapping[str, Any]] = None) -> str:
    """The registry's caption of `analysis` with the analysis settings and the experiment's steps and
    checkpoint epochs filled in (`tfconv.analyses.caption_for`)."""
    from . import caption_for

    return caption_for(analysis, dict(settings or {}, step_size=_join(exp.steps),
                                      checkpoint_epochs=_join(exp.checkpoint_epochs)))


def figure_caption_values(exp: Experiment, analysis: str,
                          settings: Optional[Mapping[str, Any]] = None) -> Dict[str, str]:
    """What workflow/report/figure.rst prints for figure `analysis` of `exp`: the setting paragraph,
    the analysis's caption and the confidence level of its intervals."""
    return {"setting": setting_text(exp), "caption": analysis_caption(exp, analysis, settings),
            "confidence": confidence_percent(settings)}


def tables_caption_values(settings: Optional[Mapping[str, Any]] = None) -> Dict[str, str]:
    """What workflow/report/claims.rst and slopes.rst print: the confidence level and the thresholds."""
    s = analysis_settings(settings)
    return {"confidence": confidence_percent(s), "min_effect": f"{100 * s['min_effect']:g}",
            "power_level": f"{s['power_level']:g}", "rate_from": f"{s['rate_range'][0]:g}",
            "rate_floor": f"{s['rate_range'][1]:g}", "rate_factor": f"{s['rate_factor']:g}",
            "sufficiency_constant": f"{s['sufficiency_constant']:g}", "bound_constant": f"{s['bound_constant']:g}",
            "kernel_change_threshold": f"{s['kernel_change_threshold']:g}"}
