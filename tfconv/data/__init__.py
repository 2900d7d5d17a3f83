"""Datasets: the `Dataset` arrays, the synthetic generator, MNIST patches, movie-review text.

`dataset_from_spec` builds the dataset a config entry describes; `tokens` holds the token helpers the
real-data loaders share; `integrity` the hash checks of data files.
"""
from .build import dataset_from_spec
from .dataset import Dataset, check_arrays, content_hash
from .synthetic import LABEL_KINDS, make_synthetic

__all__ = ["Dataset", "check_arrays", "content_hash", "make_synthetic", "LABEL_KINDS", "dataset_from_spec"]
