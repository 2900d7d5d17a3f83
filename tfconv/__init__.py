"""tfconv: convergence and NTK experiments for encoder-only shallow Transformers.

Reproduces Wu, Liu, Chrysos, Cevher, "On the Convergence of Encoder-only Shallow Transformers"
(NeurIPS 2023) and goes beyond it.  Layers (docs/architecture.md): `tfconv.core` (model, training, NTK engines, linearised
dynamics: torch/numpy only), `tfconv.data` (synthetic, MNIST, text), `tfconv.config` (validated,
typed experiments), `tfconv.store` (Zarr stores and the results layout), `tfconv.runner` (units of
work), `tfconv.cluster` (Ray, Dask, SLURM), `tfconv.analyses` + `tfconv.figures` (numbers, figures,
claims), `tfconv.pipeline` (the workflow's steps).

    >>> from tfconv import ModelSpec, TrainConfig, init_kernel, init_params, make_synthetic, train_gd
    >>> data = make_synthetic(n_samples=32, d_s=8, d=32, seed=0)
    >>> spec = ModelSpec(width=256, d=32, d_s=8, scaling="inv_sqrt", init="lecun")
    >>> p0 = init_params(spec, seed=0)
    >>> ik = init_kernel(spec, data.X, data.y, p0, step="0.5limit", loss="mean")   # K_0, eta, limit
    >>> run = train_gd(spec, data.X, data.y, seed=0, train=TrainConfig(step_size=ik.step_size, epochs=200))
"""
import warnings as _warnings

from .core.kernel import InitKernel, init_kernel, kernel_change
from .core.linearised import linearised_loss, parse_step, stable_step_size
from .core.model import INIT_SCHEMES, PARAM_NAMES, ModelSpec, ShallowTransformer, attention, forward, init_params
from .core.ntk import gram_eigenvalues, ntk_block, ntk_matrix
from .core.train import RunResult, TrainConfig, train_gd
from .data import Dataset, make_synthetic

# Fixed-length strings (grid coordinates such as "inv_sqrt") have no final Zarr v3 spec yet; zarr
# warns on every write.  Snakemake leaves a timestamp file inside directory outputs.  Both are benign.
_warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
_warnings.filterwarnings("ignore", message=".*snakemake_timestamp.*")
_warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part in the Zarr format 3")

__all__ = [
    "Dataset", "make_synthetic", "INIT_SCHEMES", "PARAM_NAMES", "ModelSpec", "ShallowTransformer",
    "attention", "forward", "init_params", "gram_eigenvalues", "ntk_block", "ntk_matrix",
    "RunResult", "TrainConfig", "train_gd", "InitKernel", "init_kernel", "kernel_change", "linearised_loss",
    "parse_step", "stable_step_size",
]
__version__ = "0.1.0"
