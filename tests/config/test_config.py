"""The configuration: the typed experiment model, the defaults taken from the schema, the analysis
registry agrees with the schema, the captions and docs/analyses.md, and the config layer never imports
the analyses.  (What the configuration refuses: tests/config/test_refusals.py.)"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from inputs import BASE, _exp  # noqa: E402 (tests/ is on sys.path)
from tfconv.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


# ------------------------------------------------------------------------------------------------
# the typed experiment model
# ------------------------------------------------------------------------------------------------

def test_workflow_types_the_config():
    from tfconv.config import load_workflow
    from tfconv.core.model import ModelSpec
    from tfconv.config.experiment import TrainSettings
    from tfconv.data import make_synthetic

    wf = load_workflow(ROOT / "tests" / "configs" / "config_small.yaml")
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
load_config({str(ROOT / "tests" / "configs" / "config_small.yaml")!r})
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
    s = analysis_settings({"rate_range": [1e-9, 1e-2], "experiment": "x"})
    assert set(s) == set(props) | {"experiment"} and s["rate_range"] == [1e-9, 1e-2]
    assert all(s[k] == p["default"] for k, p in props.items() if k != "rate_range")
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
