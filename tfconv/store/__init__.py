"""The stores of tfconv (Zarr 3) and the layout of the results folder.

`Results` owns every path; one module owns each format: `datasets` (``data/<dataset>.zarr``),
`runs` (``train/<experiment>.zarr``, one zip per run), `grams` (``gram/<experiment>.zarr``) and `aggregate`
(``aggregate/<experiment>.zarr``, one xarray dataset per experiment).  `_zarr` holds the atomic
write helpers they share; it is private: code outside the store asks these public functions
(`exists`, `attrs`, `marked_complete`, `modified_ns`, `metadata_file`, `block_digest`) and never reads
Zarr's metadata files itself.  Everything is re-exported here: ``from tfconv import store``.
"""
from ._zarr import (StoreError, attrs, block_digest, clean_staging, exists, group_attrs, json_safe, marked_complete,
                    metadata_file, modified_ns, write_json_atomic, write_text_atomic)
from .datasets import DATASET_ARRAYS, dataset_hash, read_dataset, write_dataset
from .grams import (assembled_matrix, block_ranges, blocks_done, check_gram, check_gram_store, drop_factors,
                    ensure_gram, factor_file, finalize_gram, group_dir, gram_complete, gram_path, gram_precision,
                    gram_statistics_stored, lambda_min_assessment, open_gram, read_factors, read_gram, read_spectrum,
                    upper_blocks, write_block, write_factors)
from .layout import Results
from .runs import (check_run, check_train_store, ensure_train_store, list_runs, read_curves, read_run, run_attrs,
                   run_complete, run_path, runs_dir, write_run)

__all__ = [
    "StoreError", "Results", "attrs", "block_digest", "clean_staging", "exists", "group_attrs", "json_safe",
    "marked_complete", "metadata_file", "modified_ns", "write_json_atomic", "write_text_atomic",
    "DATASET_ARRAYS", "dataset_hash", "read_dataset", "write_dataset",
    "assembled_matrix", "block_ranges", "blocks_done", "check_gram", "check_gram_store", "ensure_gram", "finalize_gram",
    "gram_complete", "gram_path", "gram_precision", "gram_statistics_stored", "lambda_min_assessment", "open_gram",
    "read_gram", "read_spectrum", "drop_factors", "factor_file", "group_dir", "read_factors", "write_factors",
    "upper_blocks", "write_block",
    "check_run", "check_train_store", "ensure_train_store", "list_runs", "read_curves", "read_run", "run_attrs",
    "run_complete", "run_path", "runs_dir", "write_run",
]
