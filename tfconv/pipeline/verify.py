"""`tfconv verify PATH [--config FILE] [--repair]`: check that a results folder's *content* is what its
stores declare, and lead to a repair.

What is checked (one line per problem, each naming the item; the report says what was checked):

* datasets: complete, content matches the recorded sha256 (recomputed);
* runs: every declared grid point present, a real folder (not a symlink), complete; its folder name,
  recorded run id and grid point agree; the sha256 of every array (curves, checkpoints) matches the
  digest recorded when the run was written; it was trained on the dataset its store declares; its
  settings (epochs, loss, checkpoints, step) are the config's (with ``--config``); the epoch-0
  checkpoint is the seeded initialisation (re-derived, for models up to 2M parameters); curves finite
  where they must be;
* Gram matrices: every declared one complete with all its arrays; every block's digest (recorded by
  the writer) recomputed from K, the mirror blocks equal, K finite; the eigenvalues match their
  digest and K (their sum is trace K);
* aggregates: open, their digest matches, and each run's loss in the aggregate equals the run's;
* tables: claims.csv and slopes.csv match the digests the tables step recorded.

The content checks of one run and one Gram belong to their store modules (`tfconv.store.check_run`,
`tfconv.store.check_gram`); here: the walk over the results folder, what needs the config or the model
(a run's settings, its epoch-0 checkpoint), the report and the repair.

With ``repair`` every damaged item is removed together with the manifest that vouches for it (a run
and its experiment's train manifest, a Gram and the gram manifest, an aggregate, the tables), so the
next `snakemake` run recomputes exactly those items (the stores resume from what is intact); the
verify report is removed whenever a problem is found, so a stale "OK" never survives.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Set, Tuple

import numpy as np

from .. import store
from ..config import run_id
from ..store import Results
from ..store.layout import store_name

#: models above this many parameters are not re-initialised to check their epoch-0 checkpoint
MAX_REINIT_PARAMS = 2_000_000


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


#: seconds between two progress lines inside one store
PROGRESS_EVERY = 5.0


class _Report:
    def __init__(self, progress: Optional[Callable[[str], None]] = None):
        self.problems: List[str] = []
        self.damaged: Set[Tuple] = set()
        self.counts: Dict[str, int] = {}
        self.progress = progress
        self._last = time.time()

    def say(self, msg: str, every: Optional[float] = None) -> None:
        """A progress line (at most one per `every` seconds when given)."""
        now = time.time()
        if self.progress is None or (every is not None and now - self._last < every):
            return
        self._last = now
        self.progress(msg)

    def bad(self, msg: str, item: Tuple) -> None:
        self.problems.append(msg)
        self.damaged.add(item)

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n


def _check_datasets(res: Results, rep: _Report) -> Dict[str, str]:
    hashes = {}
    for name in res.stores("data"):
        p = res.data(name)
        rep.count("datasets")
        try:
            hashes[name] = store.read_dataset(p, verify=True).meta["content_hash"]
        except Exception as exc:  # noqa: BLE001
            rep.bad(f"{p}: {exc}", ("dataset", name))
    return hashes


def _settings_problems(exp, point, attrs) -> List[str]:
    out = []
    have = attrs.get("train") or {}
    for k, v in exp.train.to_dict().items():
        if k in have and have[k] != store.json_safe(v):
            out.append(f"{k}={have[k]!r} (config: {v!r})")
    step = (attrs.get("kernel") or {}).get("step")
    if step is not None and step != store.json_safe(point.step):
        out.append(f"step_size={step!r} (config: {point.step!r})")
    return out


def _check_init(attrs, run) -> Optional[str]:
    """Whether the epoch-0 checkpoint is the seeded initialisation of the recorded spec."""
    from ..core.model import ModelSpec, init_params

    spec_d = attrs.get("spec")
    if not spec_d or 0 not in run["checkpoints"]:
        return None
    spec = ModelSpec(**spec_d)
    if spec.n_params() > MAX_REINIT_PARAMS:
        return None
    ref = init_params(spec, int(attrs.get("seed", 0)))
    got = run["checkpoints"][0]
    for k, v in ref.items():
        if k not in got or got[k].tobytes() != v.numpy().tobytes():
            return f"its epoch-0 checkpoint {k} is not the initialisation of seed {attrs.get('seed')}"
    return None


def _check_runs(res: Results, exp_name: str, ts: Path, wf, ds_hashes, rep: _Report) -> Dict[str, dict]:
    runs = {}
    a = store.group_attrs(ts)
    points = a.get("points") or []
    if not points:
        rep.bad(f"{ts}: no declared grid points in its attributes", ("train", exp_name))
        return runs
    ds_name = store_name(str(a.get("dataset_store", "")))
    declared = a.get("dataset_sha256")
    if ds_name in ds_hashes and declared and declared != ds_hashes[ds_name]:
        rep.bad(f"{ts}: trained on dataset sha256 {declared[:16]}..., but {res.data(ds_name)} now has "
                f"{ds_hashes[ds_name][:16]}...", ("train", exp_name))
    elif ds_name and ds_name not in ds_hashes and not res.data(ds_name).exists():
        rep.bad(f"{ts}: its dataset store {res.data(ds_name)} was not found", ("train", exp_name))
    exp = wf.experiments.get(exp_name) if wf is not None else None
    actual = ds_hashes.get(ds_name, declared)  # the dataset as it is, else what the store declares
    for i, p in enumerate(points):
        rep.say(f"  {ts.name}: {i}/{len(points)} runs checked", every=PROGRESS_EVERY)
        rid = run_id(p)
        rep.count("runs")
        run, why = store.check_run(ts, rid, run_id_of=run_id, dataset_sha256=actual,
                                   checkpoint_epochs=a.get("checkpoint_epochs", []))
        if run is None:
            rep.bad(f"{ts}: {why[0]}", ("run", exp_name, rid))
            continue
        ra = run["attrs"]
        if exp is not None:
            pt = exp.point(p) if set(p) == set(exp.axes) else None
            diff = _settings_problems(exp, pt, ra) if pt is not None else []
            if diff:
                why.append("it was trained with " + ", ".join(diff))
        bad_init = _check_init(ra, run)
        if bad_init:
            why.append(bad_init)
        if why:
            rep.bad(f"{ts}: run {rid}: " + "; ".join(why), ("run", exp_name, rid))
        else:
            runs[rid] = run
    return runs


def _check_aggregate(res: Results, name: str, runs: Dict[str, dict], rep: _Report) -> None:
    from ..store.aggregate import aggregate_digest, open_aggregate

    p = res.aggregate(name)
    rep.count("aggregates")
    try:
        xds = open_aggregate(p)
    except Exception as exc:  # noqa: BLE001
        rep.bad(f"{p}: aggregate does not open: {exc}", ("aggregate", name))
        return
    rec = xds.attrs.get("content_sha256")
    if rec and aggregate_digest(xds) != rec:
        rep.bad(f"{p}: its values no longer match the digest recorded when it was written", ("aggregate", name))
        return
    axes = [a for a in xds["status"].dims]
    for rid, run in runs.items():
        pt = run["attrs"].get("point", {})
        try:
            sel = {a: (str(pt[a]) if a in ("scaling", "step_size") else pt[a]) for a in axes}
            agg = np.asarray(xds["loss"].sel(sel).values, dtype=float)
        except (KeyError, ValueError):
            continue
        if not np.array_equal(agg, np.asarray(run["curves"]["loss"], dtype=float), equal_nan=True):
            rep.bad(f"{p}: the loss of run {rid} differs from the run's (the aggregate is stale)", ("aggregate", name))
            return


def _check_tables(res: Results, rep: _Report) -> None:
    m = res.tables_manifest
    if not m.exists():
        if res.claims.exists():
            rep.bad(f"{m}: missing (the tables cannot be checked)", ("tables",))
        return
    rec = json.loads(m.read_text())
    for path in (res.claims, res.slopes):
        rep.count("tables")
        if not path.exists():
            rep.bad(f"{path}: missing", ("tables",))
        elif file_sha256(path) != rec.get(path.name):
            rep.bad(f"{path}: its content differs from what the tables step wrote", ("tables",))


def verify_path(results, wf=None, progress: Optional[Callable[[str], None]] = None
                ) -> Tuple[List[str], Set[Tuple], Dict[str, int]]:
    """(problems, damaged items, counts of what was checked) for a results folder (or one train store);
    `progress` gets a line per store checked, and one every `PROGRESS_EVERY` seconds inside a store."""
    root = Path(results)
    rep = _Report(progress)
    t0 = time.time()
    if not root.exists():
        return [f"{root}: does not exist"], set(), {}
    located = Results.locate(root)
    single = located is not None and located[1] == "train"  # one train store
    res = located[0] if single else Results(root)
    ds_hashes = _check_datasets(res, rep)
    rep.say(f"datasets: {len(ds_hashes)} checked ({time.time() - t0:.1f} s)")
    names = [located[2]] if single else res.stores("train")
    if not names:
        rep.problems.append(f"{root}: no training stores found (expected train/<experiment>.zarr)")
    for k, name in enumerate(names, 1):
        ts = res.train(name)
        t1, before = time.time(), dict(rep.counts)
        rep.say(f"[{k}/{len(names)}] {name}: checking its runs" + (", Grams" if store.group_attrs(ts).get("gram") else "")
                + (" and aggregate" if not single and res.aggregate(name).exists() else ""))
        runs = _check_runs(res, name, ts, wf, ds_hashes, rep)
        a = store.group_attrs(ts)
        if a.get("gram"):
            gs = res.gram(name)
            for j, (rid, run) in enumerate(runs.items()):
                rep.say(f"  {gs.name}: Grams of {j}/{len(runs)} runs checked", every=PROGRESS_EVERY)
                for e in run["attrs"]["checkpoint_epochs"]:
                    rep.count("Grams")
                    if store.gram_path(gs, rid, e).is_symlink() or not store.gram_complete(gs, rid, e):
                        rep.bad(f"{gs}: Gram of {rid} at epoch {e} is missing or incomplete", ("gram", name, rid, e))
                        continue
                    try:
                        why = store.check_gram(gs, rid, e)
                    except Exception as exc:  # noqa: BLE001 - marked complete but unreadable
                        rep.bad(f"{gs}: Gram of {rid} at epoch {e} is marked complete but cannot be read: {exc}",
                                ("gram", name, rid, e))
                        continue
                    ga = store.attrs(store.gram_path(gs, rid, e))  # what check_gram read: every upper block
                    n, block_size = int(ga.get("n", 0)), max(1, int(ga.get("block_size", 1)))
                    rep.count("Gram blocks", len(store.upper_blocks(n, block_size)))
                    if why:
                        rep.bad(f"{gs}: Gram of {rid} at epoch {e}: " + "; ".join(why), ("gram", name, rid, e))
        if not single and res.aggregate(name).exists():
            _check_aggregate(res, name, runs, rep)
        done = ", ".join(f"{rep.counts[c] - before.get(c, 0)} {c}" for c in rep.counts if rep.counts[c] > before.get(c, 0))
        rep.say(f"[{k}/{len(names)}] {name}: {done or 'nothing'} checked ({time.time() - t1:.1f} s)")
    if not single:
        _check_tables(res, rep)
    return rep.problems, rep.damaged, rep.counts


def repair(results, damaged: Set[Tuple], log=print) -> List[str]:
    """Remove every damaged item and the manifest that vouches for it; returns what was removed."""
    res = Results(results)
    removed = []

    def rm(p: Path) -> None:
        if p.is_symlink() or p.is_file():
            p.unlink()
            removed.append(str(p))
        elif p.is_dir():
            shutil.rmtree(p)
            removed.append(str(p))

    for item in sorted(damaged, key=str):
        kind = item[0]
        if kind == "dataset":
            rm(res.data(item[1]))
        elif kind in ("run", "train"):
            if kind == "run":
                rm(store.run_path(res.train(item[1]), item[2]))
            rm(res.train_manifest(item[1]))
        elif kind == "gram":
            rm(store.gram_path(res.gram(item[1]), item[2], item[3]))
            rm(res.gram_manifest(item[1]))
        elif kind == "aggregate":
            rm(res.aggregate(item[1]))
        elif kind == "tables":
            for p in (res.claims, res.slopes, res.tables_manifest):
                rm(p)
    for p in (res.verify_report, Path(str(res.verify_report) + ".json")):
        rm(p)
    for r in removed:
        log(f"  removed {r}")
    return removed


def verify_results(cfg: Optional[Mapping] = None, results: Optional[str] = None, report_path: Optional[str] = None,
                   repair_damage: bool = False, progress: Optional[Callable[[str], None]] = None) -> List[str]:
    """Verify the results folder of a config (or `results`); print what was checked and every problem;
    write the report only when everything is fine; with `repair_damage` remove the damaged items.
    `progress` (default: `tfconv.pipeline.logs.log`) gets a line per store as it is checked."""
    from ..config import Workflow
    from .logs import log

    wf = Workflow.from_config(cfg) if cfg is not None and "experiments" in cfg else None
    path = results or (wf.config["results"] if wf is not None else "results")
    t0 = time.time()
    problems, damaged, counts = verify_path(path, wf, progress=log if progress is None else progress)
    checked = ", ".join(f"{v} {k}" for k, v in counts.items()) or "nothing"
    lines = [f"tfconv verify {path}: " + ("OK" if not problems else f"{len(problems)} problem(s)")
             + f" (checked {checked} in {time.time() - t0:.1f} s)"]
    lines += [f"  - {p}" for p in problems]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if problems:
        res = Results(path)
        for p in (res.verify_report, Path(str(res.verify_report) + ".json")):
            if p.exists():
                p.unlink()
        if repair_damage:
            removed = repair(path, damaged)
            print(f"tfconv verify: removed {len(removed)} damaged item(s); run the workflow again to recompute them")
    elif report_path:
        store.write_json_atomic(str(report_path) + ".json", {"path": str(path), "problems": problems, "checked": counts})
        Path(report_path).write_text(text)
    return problems
