"""Your own grid, safely: a config with only `datasets` and `experiments` is validated by `tfconv validate`
exactly as the workflow merges it, runs with `snakemake --configfile`, and writes to a results folder of
its own, leaving the default run's `results/` byte for byte as it was."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tfconv.config import ConfigError
from tfconv.config.loader import load_user_config, merge_over_default

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "config" / "config.yaml"

#: the smallest useful grid: two widths, one seed, a few epochs, one figure
MINE = {
    "datasets": {"tiny": {"kind": "synthetic", "n_samples": 8, "d_s": 4, "d": 8}},
    "experiments": {"mine": {"dataset": "tiny", "grid": {"width": [8, 16], "scaling": ["inv_sqrt"], "init": ["lecun"],
                                                         "seed": [0]},
                             "train": {"epochs": 5, "checkpoint_epochs": [0, 5]}, "gram": False,
                             "analyses": ["loss_per_width"]}},
}


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "tfconv.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120, check=False)


def tree_digest(root: Path) -> dict:
    """{relative path: sha256} of every file under `root` (symlinks by their target)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_symlink():
            out[str(p.relative_to(root))] = "-> " + os.readlink(p)
    return out


def test_validate_merges_as_the_workflow_does(tmp_path):
    """Only `datasets` and `experiments`: valid, with the default's settings (gram.block_size 128, its
    resources), the results folder results-<name>, and one OK line at the end."""
    f = tmp_path / "mine.yaml"
    f.write_text(yaml.safe_dump(MINE))
    proc = cli("validate", str(f))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith(f"OK: {f} is valid: 1 experiment(s), 2 runs, 1 figure(s)"), lines
    assert sum(ln.startswith("OK") for ln in lines) == 1
    assert "results folder: results-mine/" in lines and any(ln.startswith("[size] mine: 2 runs") for ln in lines)
    assert len(lines) < 10, "validate prints a summary, the merged config only with --print"

    cfg = load_user_config(f, DEFAULT)
    default = yaml.safe_load(DEFAULT.read_text())
    assert cfg["results"] == "results-mine"
    assert cfg["gram"]["block_size"] == default["gram"]["block_size"] == 128
    assert cfg["resources"]["train_grid"]["mem_mb"] == default["resources"]["train_grid"]["mem_mb"]
    assert list(cfg["experiments"]) == ["mine"]

    printed = cli("validate", str(f), "--print")
    merged = yaml.safe_load(printed.stdout)  # still a valid config: what was said is in comments
    assert merged == cfg and printed.stdout.rstrip().splitlines()[-1].startswith("# OK: ")


def test_validate_names_what_is_wrong(tmp_path):
    bad = dict(MINE, experiments={"mine": dict(MINE["experiments"]["mine"], dataset="nope")})
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(bad))
    proc = cli("validate", str(f))
    assert proc.returncode == 2 and "OK" not in proc.stdout
    assert "nope" in proc.stderr and str(f) in proc.stderr, proc.stderr


def test_merge_keeps_an_explicit_results_folder_and_needs_a_name_otherwise():
    default = {"results": "results", "gram": {"block_size": 128}}
    assert merge_over_default({"results": "mine"}, default)["results"] == "mine"
    assert merge_over_default({}, default, name="a+b")["results"] == "results-a+b"
    with pytest.raises(ConfigError, match="needs `results:`"):
        merge_over_default({}, default)


@pytest.mark.slow
def test_own_config_runs_and_leaves_the_default_results_untouched(small_workflow_run, tmp_path):
    """In the folder of a finished run whose config writes `results/` (the shared small run), a config
    with only `datasets` and `experiments` runs with `snakemake --configfile`, writes results-<name>/,
    and leaves every byte of results/ as it was."""
    from conftest import run_snakemake

    wd, _, _ = small_workflow_run
    before = tree_digest(wd / "results")
    assert before, "the default run left no results"
    f = tmp_path / "mine.yaml"
    f.write_text(yaml.safe_dump(MINE))
    proc = run_snakemake(wd, "--cores", "2", config=f)
    assert tree_digest(wd / "results") == before
    own = wd / "results-mine"
    assert (own / "figures" / "mine" / "loss_per_width.png").is_file()
    assert (own / "tables" / "claims.csv").is_file() and (own / "verify.txt").is_file()
    assert "results-mine" in proc.stdout + proc.stderr
