"""The configuration: bad values and files are refused with a message naming the key and what is
allowed, before any work (also through `snakemake -n`); the typed experiment model; the analysis
registry agrees with the schema, the captions and docs/analyses.md."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from inputs import BASE, _drop, _exp, _set  # noqa: E402 (tests/ is on sys.path)
from tfconv import cli
from tfconv.config import ConfigError, load_config
from timeouts import hard_timeout  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

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
    ("fixed-step-with-cross-entropy-limit", lambda c: _exp(c)["train"].update(loss="cross_entropy", step_size="0.5limit"),
     ["experiments.grid.train.step_size", "'0.5limit' is a fraction of the stability limit", "give a fixed step"]),
    ("step-fraction-too-large", _set("experiments", "grid", "train", "step_size", "2.5limit"),
     ["experiments.grid.train.step_size", "0 < c < 2"]),
    ("grid-step-not-a-step", _set("experiments", "grid", "grid", "step_size", ["half"]),
     ["experiments.grid.grid.step_size.0"]),
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
# the typed experiment model
# ------------------------------------------------------------------------------------------------

def test_workflow_types_the_config():
    from tfconv.config import load_workflow
    from tfconv.core.model import ModelSpec
    from tfconv.config.experiment import TrainSettings
    from tfconv.data import make_synthetic

    wf = load_workflow(ROOT / "tests" / "data" / "config_small.yaml")
    exp = wf.experiment("grid")
    assert exp.axes == ["width", "scaling", "init", "seed"]
    pts = exp.points
    assert len(pts) == 2 * 2 * 2 * 1
    # grid order: the product of the axes in GRID_AXES order, last axis fastest
    assert [p.run_id for p in pts[:3]] == ["width=8_scaling=inv_sqrt_init=lecun_seed=0",
                                           "width=8_scaling=inv_sqrt_init=ntk_seed=0",
                                           "width=8_scaling=inv_init=lecun_seed=0"]
    assert isinstance(exp.train, TrainSettings) and exp.train.epochs == 30 and exp.train.checkpoint_epochs == (0, 10, 30)
    assert exp.train.step == "0.5limit" and pts[0].step == "0.5limit" and exp.train.config(0.1).step_size == 0.1
    assert exp.gram_epochs == [0, 10, 30] and exp.dataset.n_samples == 12 and pts[0].n_samples == 12
    spec = pts[1].spec(make_synthetic(12, d_s=4, d=8))
    assert spec == ModelSpec(width=8, d=8, d_s=4, n_outputs=1, scaling="inv_sqrt", init="ntk", hidden=True, dtype="float32")
    assert str(wf.results.train("grid")) == "results/train/grid.zarr"
    with pytest.raises(ConfigError, match="experiment 'nope' is not in the config; defined: grid"):
        wf.experiment("nope")


def test_grid_axes_left_out_take_the_schema_defaults():
    from tfconv.config import load_workflow

    cfg = copy.deepcopy(BASE)
    _exp(cfg)["grid"] = {"width": [8], "n_samples": [6, 12]}
    exp = load_workflow(cfg).experiment("grid")
    p = exp.points[0]
    # the schema fills scaling/init/seed in, so they are axes of length 1 with the default values
    assert (p["scaling"], p["init"], p.seed, p.n_samples) == ("inv_sqrt", "lecun", 0, 6)
    assert p.run_id == "n_samples=6_width=8_scaling=inv_sqrt_init=lecun_seed=0"


def test_jobs_type_the_validated_config_without_validating_again(monkeypatch):
    """common.smk validates once when the Snakefile is parsed; a job's task only types the config."""
    import types

    import tfconv.config.loader as loader
    from tfconv.pipeline.steps import workflow_of

    validated = load_config(copy.deepcopy(BASE))

    def refuse(*a, **k):
        raise AssertionError("validated a second time")

    monkeypatch.setattr(loader, "validate_config", refuse)
    wf = workflow_of(types.SimpleNamespace(config=validated))
    assert wf.experiment("grid").train.step == 1.0


# ------------------------------------------------------------------------------------------------
# the analysis registry is the one list of analyses
# ------------------------------------------------------------------------------------------------

def test_schema_enum_captions_and_docs_come_from_the_registry():
    from tfconv.analyses import caption_for
    from tfconv.analyses import all_analyses, analysis_names, docs_table
    from tfconv.registry import SECTIONS
    from tfconv.config import SCHEMA_PATH, load_schema

    names = analysis_names()
    assert len(names) >= 11 and len(set(names)) == len(names)
    enum = load_schema()["$defs"]["experiment"]["properties"]["analyses"]["items"]["enum"]
    assert list(enum) == list(names)
    # the schema file itself lists no analyses: the registry is the only place that does
    raw = yaml.safe_load(SCHEMA_PATH.read_text())
    assert raw["$defs"]["experiment"]["properties"]["analyses"]["items"]["enum"] == []
    for a in all_analyses():
        assert f"tfconv.analyses.{a.section}" in SECTIONS
        cap = caption_for(a.name, {"step_size": 0.5, "checkpoint_epochs": "0, 10"})
        assert len(cap) > 80 and "{" not in cap, a.name
    docs = (ROOT / "docs" / "analyses.md").read_text()
    assert docs_table() in docs, "docs/analyses.md's table is stale: python -m tfconv.analyses"


def test_registry_declarations_are_the_registered_analyses():
    """`DECLARED` (what the config validates against without importing the analyses) lists every
    registered analysis in order, with its section and requirements; `register` refuses the rest."""
    import dataclasses

    import tfconv.analyses  # noqa: F401  (the section modules register on import)
    from tfconv.registry import DECLARED, REGISTRY, Requires, all_analyses, register

    registered = all_analyses()
    assert [a.name for a in registered] == list(DECLARED) and set(REGISTRY) == set(DECLARED)
    for a in registered:
        assert (a.section, a.requires) == DECLARED[a.name], a.name
    first = registered[0]
    with pytest.raises(ValueError, match="not declared: add it to tfconv.registry.DECLARED"):
        register(dataclasses.replace(first, name="undeclared_analysis"))
    with pytest.raises(ValueError, match="DECLARED says"):
        register(dataclasses.replace(first, requires=Requires(gram=True)))
    assert REGISTRY[first.name] is first and "undeclared_analysis" not in REGISTRY


def test_config_layer_never_imports_the_analyses(tmp_path):
    """Loading the schema and validating configs (the analyses enum, an analysis's requirements
    refused) import no module of tfconv.analyses, not even through the registry's importlib."""
    import json

    bad = copy.deepcopy(BASE)
    _exp(bad)["analyses"] = ["overparam_exponent"]  # needs >= 2 values of grid.n_samples
    code = f"""
import json, sys
from tfconv.config import ConfigError, load_config, load_schema
load_schema()
load_config({str(ROOT / "tests" / "data" / "config_small.yaml")!r})
try:
    load_config(json.loads({json.dumps(bad)!r}))
except ConfigError as exc:
    assert "'overparam_exponent' needs at least 2 values of grid.n_samples" in str(exc), exc
else:
    raise SystemExit("the config was not refused")
print("analyses imported:", sorted(m for m in sys.modules if m.startswith("tfconv.analyses")))
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "analyses imported: []" in out.stdout, out.stdout


def test_axis_analysis_and_resource_defaults_come_from_the_schema():
    from tfconv.config import AXIS_DEFAULTS, Workflow, analysis_settings
    from tfconv.config.schema import schema_file

    schema = schema_file()
    grid = schema["$defs"]["experiment"]["properties"]["grid"]["properties"]
    assert AXIS_DEFAULTS == {a: grid[a]["default"][0] for a in ("scaling", "init", "seed")}
    assert AXIS_DEFAULTS == {"scaling": "inv_sqrt", "init": "lecun", "seed": 0}
    # analysis settings are complete: every key of the schema's section, its default where not given
    props = schema["properties"]["analysis"]["properties"]
    s = analysis_settings({"rate_window": [0.2, 1.0], "experiment": "x"})
    assert set(s) == set(props) | {"experiment"} and s["rate_window"] == [0.2, 1.0]
    assert all(s[k] == p["default"] for k, p in props.items() if k != "rate_window")
    assert load_config(copy.deepcopy(BASE))["analysis"] == analysis_settings() and analysis_settings()["confidence"] == 0.95
    # a rule's resources: resources.<rule> over resources.default over the schema's built-in values,
    # which are never written into the config (without resources the memory budget stays the machine's)
    builtin = schema["$defs"]["rule_resources"]["default"]
    assert builtin == {"threads": 1, "mem_mb": 2000, "runtime": 60, "gpus": 0}
    cfg = load_config(copy.deepcopy(BASE))
    assert cfg["resources"] == {} and Workflow.from_config(cfg).resources("plot") == builtin
    cfg = load_config({**copy.deepcopy(BASE), "resources": {"default": {"mem_mb": 3000}, "plot": {"runtime": 5}}})
    assert cfg["resources"] == {"default": {"mem_mb": 3000}, "plot": {"runtime": 5}}
    assert Workflow.from_config(cfg).resources("plot") == {**builtin, "mem_mb": 3000, "runtime": 5}
    # the SLURM profile's default-resources (rules that set none: every tfconv rule sets its own) agree
    profile = yaml.safe_load((ROOT / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["default-resources"] == {k: builtin[k] for k in profile["default-resources"]}
