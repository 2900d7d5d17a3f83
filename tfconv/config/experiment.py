"""The typed experiment model: built once from a validated config and passed down the layers.

    wf = load_workflow("config/config.yaml")                         # validates once (tfconv.config.loader)
    exp = wf.experiment("synthetic")                                 # Experiment
    for point in exp.points:                                         # GridPoint, grid order
        point.run_id          # 'width=64_scaling=inv_sqrt_init=lecun_seed=0'
        point.spec(data)      # ModelSpec for a dataset (or any object with d_s, d, n_outputs)
    exp.train                 # TrainSettings shared by the runs; .config(eta) is a run's TrainConfig

One name for one thing: the grid axes (`GRID_AXES`) are the config keys under ``grid``, the keys of a
point, the parts of a run id, the Zarr dimensions of the aggregate and the figure labels.  Where a
dataset's size lives (``n_samples`` for synthetic/text, ``n_train`` for MNIST) is known here only
(`DatasetSpec.n_samples`).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from .errors import ConfigError
from .schema import grid_defaults, rule_resources

#: Grid axes in the fixed order used for run ids, Zarr dimensions and figure labels.
GRID_AXES = ("n_samples", "width", "scaling", "init", "step_size", "seed")

#: Values of the axes an experiment does not list: the schema's one-value defaults for `grid`
#: (scaling inv_sqrt, init lecun, seed 0).
AXIS_DEFAULTS: Dict[str, Any] = dict(sorted(grid_defaults().items(), key=lambda av: GRID_AXES.index(av[0])))


def run_id(point: Mapping[str, Any]) -> str:
    """A stable, readable id of a grid point, e.g. 'width=64_scaling=inv_sqrt_init=lecun_seed=0'."""
    return "_".join(f"{a}={point[a]}" for a in GRID_AXES if a in point)


@dataclass(frozen=True)
class DatasetSpec:
    """One entry of ``datasets:`` (validated, defaults filled)."""

    name: str
    kind: str
    settings: Mapping[str, Any]

    @property
    def n_samples(self) -> int:
        """Training samples N of the dataset (MNIST calls the key ``n_train``: the one place that knows)."""
        return int(self.settings["n_train"] if self.kind == "mnist" else self.settings["n_samples"])

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.settings)


@dataclass(frozen=True)
class GridPoint:
    """One run of an experiment: its coordinates on the experiment's grid axes."""

    experiment: "Experiment" = field(repr=False, compare=False)
    coords: Tuple[Tuple[str, Any], ...]

    @property
    def run_id(self) -> str:
        return run_id(dict(self.coords))

    def as_dict(self) -> Dict[str, Any]:
        return dict(self.coords)

    def get(self, axis: str, default: Any = None) -> Any:
        return dict(self.coords).get(axis, default)

    def __getitem__(self, axis: str) -> Any:
        d = dict(self.coords)
        if axis in d:
            return d[axis]
        if axis in AXIS_DEFAULTS:
            return AXIS_DEFAULTS[axis]
        raise KeyError(axis)

    @property
    def seed(self) -> int:
        return int(self["seed"])

    @property
    def width(self) -> int:
        return int(self["width"])

    @property
    def step(self):
        """The step specification of this run: the grid's step_size, else train.step_size
        (a fixed step, or '<c>limit': `tfconv.core.linearised.parse_step`)."""
        v = self.get("step_size")
        return v if v is not None else self.experiment.train.step

    @property
    def kernel_only(self) -> bool:
        """Wider than train.max_gd_width: K_0 and the linearised prediction only, no gradient descent."""
        m = self.experiment.train.max_gd_width
        return m is not None and self.width > m

    @property
    def n_samples(self) -> int:
        """Training samples of this run: the grid's n_samples, else the whole dataset."""
        n = self.get("n_samples")
        return int(n) if n is not None else self.experiment.dataset.n_samples

    def spec(self, data) -> "Any":
        """The ModelSpec of this run for `data` (anything with d_s, d and n_outputs, e.g. a Dataset)."""
        from ..core.model import ModelSpec

        exp = self.experiment
        return ModelSpec(
            width=self.width, d=int(data.d), d_s=int(data.d_s), n_outputs=int(data.n_outputs),
            scaling=self["scaling"], init=self["init"], hidden=exp.hidden, dtype=exp.dtype,
            embed=int(exp.model.get("embed", 0)), positional=bool(exp.model.get("positional", False)),
            class_token=bool(exp.model.get("class_token", False)),
        )


@dataclass(frozen=True)
class TrainSettings:
    """The ``train:`` section: what every run of an experiment shares (the step may be per run)."""

    step: Any  # fixed step (number) or "<c>limit"
    epochs: int
    loss: str
    checkpoint_epochs: Tuple[int, ...]
    divergence_factor: float
    step_check: str = "warn"
    max_gd_width: Any = None
    stop_at_floor: bool = True

    def config(self, step_size: float):
        """The `tfconv.core.train.TrainConfig` of one run, with its resolved step size."""
        from ..core.train import TrainConfig

        from ..core.linearised import FLOAT_FLOOR

        return TrainConfig(step_size=float(step_size), epochs=self.epochs, loss=self.loss,
                           checkpoint_epochs=self.checkpoint_epochs, divergence_factor=self.divergence_factor,
                           stop_ratio=FLOAT_FLOOR if self.stop_at_floor else None)

    def to_dict(self) -> Dict[str, Any]:
        """The settings a stored run must share with the config to be reused (the step is per run)."""
        return {"epochs": self.epochs, "loss": self.loss, "checkpoint_epochs": list(self.checkpoint_epochs),
                "divergence_factor": self.divergence_factor, "max_gd_width": self.max_gd_width,
                "stop_at_floor": self.stop_at_floor}


@dataclass(frozen=True)
class Experiment:
    """One entry of ``experiments:``: a grid of runs on one dataset with shared training settings."""

    name: str
    description: str
    dataset: DatasetSpec
    grid: Mapping[str, Tuple[Any, ...]]
    train: TrainSettings
    hidden: bool
    dtype: str
    gram: bool
    analyses: Tuple[str, ...]
    raw: Mapping[str, Any] = field(repr=False, compare=False)
    model: Mapping[str, Any] = field(default_factory=dict)
    control: Optional[str] = None  # why it is a control experiment (its claims rows are controls)
    gram_precision: str = "float64"  # config gram.precision: every kernel of its runs (K_0, Grams) in it

    @property
    def axes(self) -> List[str]:
        """The grid axes of this experiment in canonical order (n_samples only when configured)."""
        return [a for a in GRID_AXES if a in self.grid]

    @property
    def points(self) -> List[GridPoint]:
        """Every grid point, in a deterministic order (the product of the axes in `GRID_AXES` order)."""
        axes = self.axes
        return [GridPoint(self, tuple(zip(axes, values)))
                for values in itertools.product(*(self.grid[a] for a in axes))]

    def point(self, coords: Mapping[str, Any]) -> GridPoint:
        return GridPoint(self, tuple((a, coords[a]) for a in self.axes))

    def __iter__(self) -> Iterator[GridPoint]:
        return iter(self.points)

    @property
    def checkpoint_epochs(self) -> List[int]:
        return sorted(int(e) for e in self.train.checkpoint_epochs)

    @property
    def steps(self) -> List[Any]:
        """The step specifications of the experiment (the grid's step_size axis, else train.step_size)."""
        return list(self.grid.get("step_size", (self.train.step,)))

    @property
    def gram_epochs(self) -> List[int]:
        """Checkpoint epochs whose Gram matrices are assembled (none when ``gram: false``)."""
        return self.checkpoint_epochs if self.gram else []

    def to_dict(self) -> Dict[str, Any]:
        """The experiment's config section (validated, defaults filled) as plain data."""
        return dict(self.raw)

    @classmethod
    def from_section(cls, name: str, section: Mapping[str, Any], dataset: DatasetSpec,
                     gram_precision: str = "float64") -> "Experiment":
        """An experiment from its config section (validated: every train key present), its dataset and
        the precision of its kernels (config ``gram.precision``)."""
        tr = section["train"]
        train = TrainSettings(
            step=tr["step_size"], epochs=int(tr["epochs"]), loss=tr["loss"],
            checkpoint_epochs=tuple(sorted(int(x) for x in tr["checkpoint_epochs"])),
            divergence_factor=float(tr["divergence_factor"]), step_check=tr.get("step_check", "warn"),
            max_gd_width=tr.get("max_gd_width"), stop_at_floor=bool(tr.get("stop_at_floor", True)),
        )
        return cls(
            name=name, description=str(section.get("description", "")), dataset=dataset,
            grid={a: tuple(section["grid"][a]) for a in GRID_AXES if a in section["grid"]}, train=train,
            hidden=bool(tr["hidden"]), dtype=str(tr["dtype"]), gram=bool(section.get("gram", True)),
            analyses=tuple(section.get("analyses", ())), raw=section, model=dict(section.get("model") or {}),
            control=section.get("control"), gram_precision=str(gram_precision),
        )


@dataclass(frozen=True)
class Workflow:
    """The whole validated configuration, typed: datasets, experiments and the shared settings."""

    config: Mapping[str, Any] = field(repr=False)
    datasets: Mapping[str, DatasetSpec]
    experiments: Mapping[str, Experiment]

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "Workflow":
        """Type a *validated* config (`tfconv.config.load_config`; `tfconv.config.load_workflow` does both)."""
        datasets = {name: DatasetSpec(name, entry["kind"], dict(entry)) for name, entry in cfg["datasets"].items()}
        precision = (cfg.get("gram") or {}).get("precision", "float64")
        experiments = {name: Experiment.from_section(name, e, datasets[e["dataset"]], precision)
                       for name, e in cfg["experiments"].items()}
        return cls(config=cfg, datasets=datasets, experiments=experiments)

    # --- lookups with errors that name what exists ------------------------------------------------
    def experiment(self, name: str) -> Experiment:
        if name not in self.experiments:
            raise ConfigError(f"experiment '{name}' is not in the config; defined: {', '.join(self.experiments)}")
        return self.experiments[name]

    def dataset(self, name: str) -> DatasetSpec:
        if name not in self.datasets:
            raise ConfigError(f"dataset '{name}' is not in the config; defined: {', '.join(self.datasets)}")
        return self.datasets[name]

    # --- shared settings ----------------------------------------------------------------------------
    @property
    def results(self):
        """The results folder's layout (`tfconv.store.Results`)."""
        from ..store.layout import Results

        return Results(self.config["results"])

    @property
    def gram(self) -> Mapping[str, Any]:
        return self.config["gram"]

    @property
    def dask(self) -> Mapping[str, Any]:
        return self.config["dask"]

    @property
    def ray(self) -> Mapping[str, Any]:
        return self.config["ray"]

    @property
    def analysis(self) -> Mapping[str, Any]:
        return self.config["analysis"]

    @property
    def threads_per_run(self) -> int:
        return int(self.config["threads_per_run"])

    def resources(self, rule: str) -> Dict[str, int]:
        """Resources of a rule: ``resources.<rule>`` over ``resources.default`` over the schema's
        built-in values (`tfconv.config.schema.rule_resources`)."""
        base = rule_resources()
        base.update(self.config.get("resources", {}).get("default", {}))
        base.update(self.config.get("resources", {}).get(rule, {}))
        return base

    def gram_experiments(self) -> List[str]:
        return [n for n, e in self.experiments.items() if e.gram]

    def figure_targets(self) -> List[Tuple[str, str]]:
        """(experiment, analysis) of every figure the config asks for."""
        return [(e, a) for e, exp in self.experiments.items() for a in exp.analyses]
