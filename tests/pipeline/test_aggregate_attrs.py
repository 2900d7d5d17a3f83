"""The aggregate a user opens: CF-style attributes on every coordinate, and a dataset that
``xarray.Dataset.to_netcdf`` writes and reads back (every attribute a string or a number)."""
from __future__ import annotations

import json

import numpy as np
import xarray as xr

from aggregates import tiny_aggregates  # noqa: E402 (tests/ is on sys.path)
from tfconv.analyses.stats import attr_dict
from tfconv.store.aggregate import COORDINATES, open_aggregate, write_aggregate


def test_every_coordinate_has_cf_attributes():
    clean, _, by_n = tiny_aggregates()
    for ds in (clean, by_n):
        assert {"width", "epoch", "checkpoint_epoch", "seed", "scaling", "init"} <= set(ds.coords)
        for name in ds.coords:
            a = ds[name].attrs
            assert a.get("long_name") and a.get("description"), (name, a)
            assert (COORDINATES[name][1] is None) == ("units" not in a), (name, a)
        assert ds["width"].attrs["units"] == "1" and "units" not in ds["init"].attrs
    assert "spectrum_bin" in clean.coords and "n_samples" in by_n.coords


def test_aggregate_writes_to_netcdf_and_its_mappings_read_back(tmp_path):
    """to_netcdf used to fail on dict-valued attributes ("Invalid value for attr 'dataset'"): the
    mappings are JSON strings, which `attr_dict` reads as it reads the older dict attributes."""
    clean, _, _ = tiny_aggregates()
    store = tmp_path / "agg.zarr"
    write_aggregate(store, clean)
    ds = open_aggregate(store)
    for key in ("dataset", "train", "provenance"):
        assert isinstance(ds.attrs[key], str) and isinstance(json.loads(ds.attrs[key]), dict), key
    assert attr_dict(ds, "dataset") == json.loads(ds.attrs["dataset"]) and attr_dict(ds, "dataset")
    older = ds.copy()
    older.attrs["dataset"] = json.loads(ds.attrs["dataset"])  # an aggregate written before: a mapping
    assert attr_dict(older, "dataset") == attr_dict(ds, "dataset")

    nc = tmp_path / "agg.nc"
    ds.to_netcdf(nc)
    back = xr.open_dataset(nc).load()
    assert set(back.data_vars) == set(ds.data_vars)
    np.testing.assert_array_equal(back["loss"].values, ds["loss"].values)
    assert back["width"].attrs["long_name"] == "width d_m" and back.attrs["experiment"] == ds.attrs["experiment"]
    assert attr_dict(back, "train") == attr_dict(ds, "train")
