"""tfconv: convergence and NTK experiments for encoder-only shallow Transformers.

Reproduces Wu, Liu, Chrysos, Cevher, "On the Convergence of Encoder-only Shallow Transformers"
(NeurIPS 2023) and goes beyond it.  Layers (docs/architecture.md): `tfconv.core` (model, training, NTK engines, linearised
dynamics: torch/numpy only), `tfconv.data` (synthetic, MNIST, text), `tfconv.config` (validated,
typed experiments), `tfconv.store` (Zarr stores and the results layout), `tfconv.runner` (units of
work), `tfconv.cluster` (Ray, Dask, SLURM), `tfconv.analyses` + `tfconv.figures` (numbers, figures,
claims), `tfconv.pipeline` (the workflow's steps).

    >>> from tfconv import ModelSpec, make_synthetic, train_gd, TrainConfig, ntk_matrix, init_params
    >>> data = make_synthetic(n_samples=32, d_s=8, d=32, seed=0)
    >>> spec = ModelSpec(width=256, d=32, d_s=8, scaling="inv_sqrt", init="lecun")
    >>> run = train_gd(spec, data.X, data.y, seed=0, train=TrainConfig(step_size=1.0, epochs=200))
    >>> K0 = ntk_matrix(init_params(spec, seed=0), spec, data.X)   # N x N empirical NTK at init
"""
import warnings as _warnings

from .core.model import INIT_SCHEMES, PARAM_NAMES, ModelSpec, ShallowTransformer, attention, forward, init_params
from .core.ntk import gram_eigenvalues, ntk_block, ntk_matrix
from .core.train import RunResult, TrainConfig, train_gd
from .data import Dataset, make_synthetic

# Fixed-length strings (grid coordinates such as "inv_sqrt") have no final Zarr v3 spec yet; zarr
# warns on every write.  Snakemake leaves a timestamp file inside directory outputs.  Both are benign.
_warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
_warnings.filterwarnings("ignore", message=".*snakemake_timestamp.*")

__all__ = [
    "Dataset", "make_synthetic", "INIT_SCHEMES", "PARAM_NAMES", "ModelSpec", "ShallowTransformer",
    "attention", "forward", "init_params", "gram_eigenvalues", "ntk_block", "ntk_matrix",
    "RunResult", "TrainConfig", "train_gd",
]
__version__ = "0.1.0"
