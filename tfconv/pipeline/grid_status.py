"""`tfconv status [results]`: where every grid point of every experiment stands, read from the results folder.

    tables = grid_status("results", config=None)        # {experiment: ExperimentStatus}
    print(render_summary(tables))                      # one line per experiment (`tfconv status`)
    print(render(tables))                              # one table per experiment (`tfconv status --full`)
    print(render_failed(tables))                       # the failed points and how to retry them

A grid point is in one of `STATES`:

* ``done``: its run is complete in the train store (status complete, or kernel_only for widths past
  ``train.max_gd_width``: K_0 and the linearised prediction, no gradient descent);
* ``diverged``: its run is complete and was stopped as diverged (it stays in the results, out of every fit);
* ``running``: not yet in the store while the experiment's ``train_grid`` step runs (its log is newer
  than its manifest, written to within `STALE_SECONDS`, and shows no error): queued or training;
* ``failed``: not in the store and the last ``train_grid`` attempt ended in an error (the note quotes
  it) or stopped writing its log without finishing (killed);
* ``missing``: not in the store and no attempt is under way (never started, or deleted since).

A rerun of the workflow retrains exactly the points that are not in the store (failed and missing),
and nothing else.  Per point: the latest training loss, lambda_min(K_0) and the latest relative NTK
change |K_t - K_0|_F / |K_0|_F, as the run recorded them.  The grid comes from the config when one is
given, else from each train store's declared points.  Reading is cheap: run attributes and two small
arrays per run, no Gram matrix.
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..config.experiment import GRID_AXES, run_id
from ..core.status import STATUS_DIVERGED, STATUS_KERNEL_ONLY
from .. import store
from ..store.layout import FIGURE_FILES, Results

STATES = ("done", "diverged", "running", "failed", "missing")
#: a train_grid log silent for longer than this, without an error or a manifest, is taken as killed
#: (run_grid writes a line at least every 30 s while it waits for runs)
STALE_SECONDS = 300.0
_START = re.compile(r"\[train_grid\] (?P<exp>\S+): \d+ grid points")
_ERROR = re.compile(r"^(\w+\.)*\w*(Error|Exception|Interrupt)\b.*|^Traceback \(most recent call last\)")


class StatusError(ValueError):
    """A bad request (unknown filter key, missing results folder), with what is allowed."""


@dataclass
class PointStatus:
    experiment: str
    run_id: str
    point: Dict[str, Any]
    state: str
    loss: Optional[float] = None
    lambda_min: Optional[float] = None
    kernel_change: Optional[float] = None
    epochs: Optional[int] = None
    seconds: Optional[float] = None
    note: str = ""

    def get(self, key: str) -> Any:
        return self.state if key == "state" else self.point.get(key)


@dataclass
class ExperimentStatus:
    name: str
    store: str
    points: List[PointStatus] = field(default_factory=list)
    stages: Dict[str, str] = field(default_factory=dict)
    attempt: str = ""  # what the last train_grid attempt shows: finished / running / failed: ... / none

    def counts(self) -> Dict[str, int]:
        return {s: sum(p.state == s for p in self.points) for s in STATES}


# --- reading -------------------------------------------------------------------------------------------


def _last_finite(values) -> Optional[float]:
    import numpy as np

    a = np.asarray(values, dtype=float).ravel()
    a = a[np.isfinite(a)]
    return float(a[-1]) if a.size else None


def _train_attempt(res: Results, name: str, now: float) -> tuple:
    """(state, note) of the experiment's last train_grid attempt from its log and manifest:
    ("finished" | "running" | "failed" | "none", note)."""
    logf, manifest = res.log("train_grid", name), res.train_manifest(name)
    if not logf.exists():
        return ("finished", "") if manifest.exists() else ("none", "")
    log_mtime = logf.stat().st_mtime
    if manifest.exists() and manifest.stat().st_mtime >= log_mtime - 1e-6:
        return "finished", ""
    lines = logf.read_text(errors="replace").splitlines()
    starts = [i for i, ln in enumerate(lines) if (m := _START.search(ln)) and m["exp"] == name]
    tail = lines[starts[-1]:] if starts else lines
    errors = [ln.strip() for ln in tail if _ERROR.match(ln.strip())]
    errors = [e for e in errors if not e.startswith("Traceback")] or errors
    if errors:
        return "failed", errors[-1][:300]
    if now - log_mtime > STALE_SECONDS:
        return "failed", (f"train_grid stopped without finishing or an error (log silent since "
                          f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(log_mtime))}; killed?)")
    return "running", ""


def _stages(res: Results, name: str, analyses: Optional[Sequence[str]], gram: Optional[bool]) -> Dict[str, str]:
    st = {"train": "yes" if res.train_manifest(name).exists() else "no"}
    if gram is None:
        gram = res.gram(name).exists() or res.gram_manifest(name).exists()
    if gram:
        st["gram"] = "yes" if res.gram_manifest(name).exists() else "no"
    st["aggregate"] = "yes" if store.exists(res.aggregate(name)) else "no"
    if analyses is not None:
        st["figures"] = f"{sum(res.figure(name, a, 'png').exists() for a in analyses)}/{len(analyses)}"
    else:
        d = res.figure_dir(name)
        st["figures"] = str(len(list(d.glob("*" + FIGURE_FILES["png"])))) if d.is_dir() else "0"
    return st


def _declared_points(res: Results, name: str) -> List[Dict[str, Any]]:
    p = res.train(name)
    if not store.exists(p):
        return []
    return [dict(pt) for pt in (store.attrs(p).get("points") or [])]


def _point_status(res: Results, name: str, point: Mapping[str, Any], attempt: tuple) -> PointStatus:
    from ..store.runs import read_curves, run_attrs, run_complete

    rid = run_id(point)
    train_store = res.train(name)
    ps = PointStatus(experiment=name, run_id=rid, point=dict(point), state="missing")
    if run_complete(train_store, rid):
        a = run_attrs(train_store, rid)
        status = a.get("status")
        ps.state = "diverged" if status == STATUS_DIVERGED else "done"
        curves = read_curves(train_store, rid, ["loss", "kernel_change"])
        loss = curves.get("loss")
        if loss is not None:
            import numpy as np

            ps.loss = _last_finite(loss)
            ps.epochs = max(int(np.isfinite(np.asarray(loss, dtype=float)).sum()) - 1, 0)
        kc = curves.get("kernel_change")
        if kc is not None and len(kc) > 1:  # the first checkpoint is epoch 0, where the change is 0 by definition
            ps.kernel_change = _last_finite(kc[1:])
        lm = (a.get("kernel") or {}).get("lambda_min0")
        ps.lambda_min = float(lm) if lm is not None else None
        ps.seconds = a.get("wall_seconds")
        if status == STATUS_DIVERGED:
            ps.note = f"diverged at epoch {a.get('diverged_epoch')}"
        elif status == STATUS_KERNEL_ONLY:
            ps.note = "kernel only (wider than train.max_gd_width)"
        return ps
    state, note = attempt
    if state == "running":
        ps.state, ps.note = "running", "queued or training"
    elif state == "failed":
        ps.state, ps.note = "failed", note
    return ps


def grid_status(results="results", config: Optional[Mapping[str, Any]] = None,
                experiments: Optional[Sequence[str]] = None, now: Optional[float] = None) -> Dict[str, ExperimentStatus]:
    """The status of every grid point, per experiment (see the module's docstring).

    `config`: a config (a mapping, validated here); its experiments and grids are used
    (experiments not started show every point missing).  Without it, the experiments are the train
    stores found under `results` and their grids the points each store declares."""
    res = Results(results)
    if not res.root.is_dir():
        raise StatusError(f"results folder {res.root} does not exist (give the folder the workflow wrote, "
                          "e.g. `tfconv status results`)")
    now = time.time() if now is None else now
    wf = None
    if config is not None:
        from ..config import load_workflow

        wf = load_workflow(dict(config, results=str(res.root)))  # validates, fills defaults
        names = list(wf.experiments)
    else:
        names = res.stores("train")
    if experiments:
        unknown = [e for e in experiments if e not in names]
        if unknown:
            raise StatusError(f"--experiment {', '.join(unknown)}: not in {res.root} "
                              f"(experiments: {', '.join(names) or 'none'})")
        names = [e for e in names if e in experiments]
    out = {}
    for name in names:
        if wf is not None:
            exp = wf.experiment(name)
            points = [p.as_dict() for p in exp.points]
            analyses, gram = list(exp.analyses), bool(exp.gram)
        else:
            points, analyses, gram = _declared_points(res, name), None, None
        attempt = _train_attempt(res, name, now)
        es = ExperimentStatus(name=name, store=str(res.train(name)), stages=_stages(res, name, analyses, gram),
                              attempt=attempt[0] + (f": {attempt[1]}" if attempt[1] else ""))
        es.points = [_point_status(res, name, p, attempt) for p in points]
        out[name] = es
    return out


# --- filtering -------------------------------------------------------------------------------------------


def parse_where(items: Sequence[str]) -> Dict[str, List[str]]:
    """``["width=8,32", "init=lecun"]`` -> {"width": ["8", "32"], "init": ["lecun"]}; keys are grid
    axes or ``state``."""
    allowed = list(GRID_AXES) + ["state"]
    out: Dict[str, List[str]] = {}
    for item in items:
        if "=" not in item:
            raise StatusError(f"--where {item!r}: expected key=value (keys: {', '.join(allowed)})")
        key, value = (s.strip() for s in item.split("=", 1))
        if key not in allowed:
            raise StatusError(f"--where {key}: unknown key; allowed: {', '.join(allowed)}")
        values = [v.strip() for v in value.split(",") if v.strip()]
        if key == "state":
            bad = [v for v in values if v not in STATES]
            if bad:
                raise StatusError(f"--where state={','.join(bad)}: unknown state; allowed: {', '.join(STATES)}")
        out.setdefault(key, []).extend(values)
    return out


def _matches(value: Any, wanted: Sequence[str]) -> bool:
    for w in wanted:
        if str(value) == w:
            return True
        try:
            if value is not None and not isinstance(value, str) and float(value) == float(w):
                return True
        except (TypeError, ValueError):
            pass
    return False


def apply_filters(tables: Mapping[str, ExperimentStatus], where: Mapping[str, Sequence[str]]) -> Dict[str, ExperimentStatus]:
    """Keep the points whose every filtered key matches one of its values."""
    out = {}
    for name, es in tables.items():
        pts = [p for p in es.points if all(_matches(p.get(k), v) for k, v in where.items())]
        out[name] = ExperimentStatus(name=es.name, store=es.store, points=pts, stages=es.stages, attempt=es.attempt)
    return out


# --- rendering -------------------------------------------------------------------------------------------


def _fmt(x: Any, kind: str = "g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if kind == "e":
        return f"{x:.3e}"
    if kind == "s":
        return f"{x:.1f}"
    return f"{x:.3g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    from tabulate import tabulate

    return tabulate([list(r) for r in rows], headers=list(header), tablefmt="simple", disable_numparse=True).splitlines()


def render_summary(tables: Mapping[str, ExperimentStatus]) -> str:
    """One line per experiment: its grid points by state, its stages and its last train_grid attempt;
    then the totals (`tfconv status`; the table of every grid point is `render`, ``--full``)."""
    if not tables:
        return "no experiment found (no train store under the results folder; give --config to list the planned grid)"
    rows = []
    for name, es in tables.items():
        c = es.counts()
        st = es.stages
        rows.append([name, str(len(es.points))] + [str(c[s]) for s in STATES]
                    + [st.get("train", "-"), st.get("gram", "-"), st.get("aggregate", "-"), st.get("figures", "-"),
                       es.attempt or "none"])
    header = ["experiment", "points"] + list(STATES) + ["train", "gram", "aggregate", "figures", "last train_grid"]
    total = {s: sum(es.counts()[s] for es in tables.values()) for s in STATES}
    lines = _table(header, rows)
    lines.append("")
    lines.append(f"total: {sum(len(es.points) for es in tables.values())} grid points: "
                 + ", ".join(f"{total[s]} {s}" for s in STATES)
                 + "   (every grid point: --full; the failed ones with their errors: --failed)")
    return "\n".join(lines)


def render(tables: Mapping[str, ExperimentStatus]) -> str:
    """One block per experiment: counts, stages, then one row per grid point."""
    if not tables:
        return "no experiment found (no train store under the results folder; give --config to list the planned grid)"
    lines: List[str] = []
    for name, es in tables.items():
        c = es.counts()
        lines.append(f"{name}: {len(es.points)} grid points: " + ", ".join(f"{c[s]} {s}" for s in STATES)
                     + f"   [{es.store}]")
        lines.append("  stages: " + ", ".join(f"{k} {v}" for k, v in es.stages.items())
                     + f"; last train_grid: {es.attempt or 'none'}")
        axes = [a for a in GRID_AXES if any(a in p.point for p in es.points)]
        header = axes + ["state", "epochs", "loss", "lambda_min(K0)", "kernel_change", "wall_s", "note"]
        rows = [[str(p.point.get(a, "")) for a in axes]
                + [p.state, "-" if p.epochs is None else str(p.epochs), _fmt(p.loss, "e"), _fmt(p.lambda_min),
                   _fmt(p.kernel_change), _fmt(p.seconds), p.note]
                for p in es.points]
        lines += ["  " + ln for ln in _table(header, rows)]
        lines.append("")
    total = {s: sum(es.counts()[s] for es in tables.values()) for s in STATES}
    lines.append("total: " + ", ".join(f"{total[s]} {s}" for s in STATES)
                 + "   (kernel_change: |K_t - K_0|_F / |K_0|_F at the last checkpoint)")
    return "\n".join(lines)


def failed_points(tables: Mapping[str, ExperimentStatus]) -> List[PointStatus]:
    return [p for es in tables.values() for p in es.points if p.state == "failed"]


def render_failed(tables: Mapping[str, ExperimentStatus], results="results") -> str:
    """The failed grid points, one line each, with how a rerun retries them."""
    failed = failed_points(tables)
    if not failed:
        return "no failed grid points"
    lines = [f"{len(failed)} failed grid point(s); a rerun of the workflow (snakemake --cores N, from the "
             "workflow's directory) retrains exactly the points missing from the train store, these included:"]
    rows = [[p.experiment, p.run_id, p.note] for p in failed]
    lines += ["  " + ln for ln in _table(["experiment", "run_id", "reason"], rows)]
    owner = Results(results).owner_file
    if owner.exists():
        try:
            lines.append(f"workflow directory: {json.loads(owner.read_text()).get('workdir')}")
        except (OSError, ValueError):
            pass
    return "\n".join(lines)


def to_json(tables: Mapping[str, ExperimentStatus]) -> str:
    return json.dumps({n: {"store": es.store, "stages": es.stages, "attempt": es.attempt, "counts": es.counts(),
                           "points": [asdict(p) for p in es.points]} for n, es in tables.items()}, indent=1)
