"""Where everything lives under the results folder: the one owner of the layout.

    results/
      data/<dataset>.zarr                    dataset store            (tfconv.store.datasets)
      train/<experiment>.zarr/runs/<run_id>.zip  training runs, one zipped Zarr group each (tfconv.store.runs)
      train/<experiment>.json                manifest of train_grid   (what Snakemake tracks)
      gram/<experiment>.zarr/<run_id>/epoch=<e>   Gram matrices       (tfconv.store.grams)
      gram/<experiment>.json                 manifest of assemble_gram
      aggregate/<experiment>.zarr            one xarray dataset       (tfconv.store.aggregate)
      figures/<experiment>/<analysis>.{png,pdf,csv,slopes.csv,finding.txt}
      tables/{claims,slopes}.{csv,html}, tables/synthesis.{md,json}, tables/manifest.json
      verify.txt
      logs/<rule>/<wildcards>.log, benchmarks/<rule>/<wildcards>.tsv

Every method takes names and returns a `pathlib.Path`.  The Snakemake rules call the same methods
with wildcard placeholders (``Results(root).data("{dataset}")``), so a path is spelled in one place.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple, Union

PathLike = Union[str, Path]

#: The stages that hold one Zarr store per dataset or experiment, and the suffix of a store's folder.
STAGES = ("data", "train", "gram", "aggregate")
STORE_SUFFIX = ".zarr"

#: The files of one figure: kind -> suffix after the analysis name.
FIGURE_FILES = {"png": ".png", "pdf": ".pdf", "csv": ".csv", "slopes": ".slopes.csv", "finding": ".finding.txt"}


class Results:
    """The layout of one results folder."""

    def __init__(self, root: PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Results({str(self.root)!r})"

    # --- stores -------------------------------------------------------------------------------------
    def data(self, dataset: str) -> Path:
        return self.root / "data" / f"{dataset}{STORE_SUFFIX}"

    def train(self, experiment: str) -> Path:
        return self.root / "train" / f"{experiment}{STORE_SUFFIX}"

    def train_manifest(self, experiment: str) -> Path:
        return self.root / "train" / f"{experiment}.json"

    def gram(self, experiment: str) -> Path:
        return self.root / "gram" / f"{experiment}{STORE_SUFFIX}"

    def gram_manifest(self, experiment: str) -> Path:
        return self.root / "gram" / f"{experiment}.json"

    def aggregate(self, experiment: str) -> Path:
        return self.root / "aggregate" / f"{experiment}{STORE_SUFFIX}"

    # --- figures, tables, reports ----------------------------------------------------------------------
    def figure_dir(self, experiment: str) -> Path:
        """The folder of an experiment's figures."""
        return self.root / "figures" / experiment

    def figure(self, experiment: str, analysis: str, kind: str = "png") -> Path:
        return self.figure_dir(experiment) / f"{analysis}{FIGURE_FILES[kind]}"

    @property
    def claims(self) -> Path:
        return self.root / "tables" / "claims.csv"

    @property
    def slopes(self) -> Path:
        return self.root / "tables" / "slopes.csv"

    @property
    def claims_html(self) -> Path:
        """The claims table as a self-contained HTML page (shown inline by the Snakemake report)."""
        return self.root / "tables" / "claims.html"

    @property
    def slopes_html(self) -> Path:
        return self.root / "tables" / "slopes.html"

    @property
    def synthesis(self) -> Path:
        """One sentence per claim, generated from the claims table (`tfconv.analyses.claims.synthesis`)."""
        return self.root / "tables" / "synthesis.md"

    @property
    def synthesis_json(self) -> Path:
        """The same sentences with each claim's overall verdict and verdict counts, for the report."""
        return self.root / "tables" / "synthesis.json"

    @property
    def tables_manifest(self) -> Path:
        """sha256 of claims.csv and slopes.csv as the tables step wrote them (checked by verify)."""
        return self.root / "tables" / "manifest.json"

    @property
    def verify_report(self) -> Path:
        return self.root / "verify.txt"

    def log(self, rule: str, *names: str) -> Path:
        return self.root / "logs" / rule / ("/".join(names) + ".log") if names else self.root / "logs" / f"{rule}.log"

    def benchmark(self, rule: str, *names: str) -> Path:
        return (self.root / "benchmarks" / rule / ("/".join(names) + ".tsv") if names
                else self.root / "benchmarks" / f"{rule}.tsv")

    # --- ownership: one workflow per results folder ---------------------------------------------------
    @property
    def owner_file(self) -> Path:
        return self.root / ".tfconv-owner.json"

    def claim(self, workdir) -> None:
        """Claim the folder for the workflow run from `workdir`; refuse one claimed by another workflow.

        Two workflows (different working directories) writing one results folder would mix their runs
        and race on the same stores; the first to run claims it."""
        import json
        import os

        me = os.path.realpath(str(workdir))
        f = self.owner_file
        if f.exists():
            try:
                owner = json.loads(f.read_text()).get("workdir")
            except (OSError, ValueError):
                owner = None
            if owner and owner != me:
                raise PermissionError(
                    f"results folder {os.path.realpath(self.root)} belongs to the workflow run from {owner}; this one "
                    f"runs from {me}. Give this config another `results` folder, or delete {f} to hand the folder over")
            if owner == me:
                return
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = f.with_name(f".{f.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps({"workdir": me}))
        os.replace(tmp, f)

    # --- discovery (verify, status) --------------------------------------------------------------------
    def stores(self, stage: str):
        """Names of the stores of one stage present on disk (``data``, ``train``, ``gram``, ``aggregate``)."""
        d = self.root / stage
        return sorted(store_name(p) for p in d.glob(f"*{STORE_SUFFIX}")) if d.is_dir() else []

    @classmethod
    def locate(cls, path: PathLike) -> Optional[Tuple["Results", str, str]]:
        """(its results folder, stage, name) for the path of a store laid out here
        (``<root>/<stage>/<name>.zarr``, stage one of `STAGES`), else None."""
        p = Path(path)
        if not p.name.endswith(STORE_SUFFIX) or p.parent.name not in STAGES:
            return None
        return cls(p.parent.parent), p.parent.name, store_name(p)


def store_name(path: PathLike) -> str:
    """The name of a store from its path: ``.../data/<name>.zarr`` -> ``<name>`` (the dataset or experiment)."""
    return Path(path).name[: -len(STORE_SUFFIX)]
