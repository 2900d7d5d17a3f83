"""The dataset a config entry describes (synthetic, MNIST or text), as a `tfconv.data.Dataset`."""
from __future__ import annotations


import numpy as np

from .dataset import Dataset, check_arrays
from .synthetic import make_synthetic


def dataset_from_spec(spec) -> Dataset:
    """The dataset of a `tfconv.config.DatasetSpec` (config ``datasets.<name>``, validated, defaults filled)."""
    name, entry, kind = spec.name, spec.settings, spec.kind
    if kind == "synthetic":
        ds = make_synthetic(
            n_samples=entry["n_samples"], d_s=entry["d_s"], d=entry["d"], n_outputs=entry["n_outputs"],
            token_norm=entry["token_norm"], label_kind=entry["label_kind"], seed=entry["seed"],
        )
    elif kind == "mnist":
        from .mnist import make_mnist

        out = make_mnist(
            n_train=entry["n_train"], n_test=entry["n_test"], patch_size=entry["patch_size"],
            classes=entry["classes"], seed=entry["seed"], source=entry["source"], path=entry.get("path"),
            token_norm=entry.get("token_norm"), pixels=entry.get("pixels", "standardized"),
        )
        # Shuffle (seeded) so that the first n samples of the store are a class-mixed subset.
        perm = np.random.default_rng(entry["seed"]).permutation(out["X_train"].shape[0])
        targets = entry.get("targets", "onehot")
        y_train, y_test = out["y_train"], out["y_test"]
        if targets == "parity":  # one scalar output, the theory's f: +1 for an even digit, -1 for an odd one
            y_train, y_test = (np.where(out[k] % 2 == 0, 1.0, -1.0)[:, None] for k in ("labels_train", "labels_test"))
        ds = Dataset(out["X_train"][perm], y_train[perm], dict(out["meta"], kind="mnist", targets=targets),
                     out["X_test"], y_test,
                     extra={"labels": out["labels_train"][perm], "labels_test": out["labels_test"]})
    elif kind == "text":
        from .text import make_text

        try:
            out = make_text(
                source=entry["source"], n_samples=entry["n_samples"], d_s=entry["d_s"], d=entry["d"],
                seed=entry["seed"], path=entry.get("path"), token_norm=entry["token_norm"],
                distinct=entry["distinct"],
            )
        except ValueError as exc:
            if "usable reviews" not in str(exc):
                raise
            raise ValueError(f"datasets.{name}.n_samples: {exc}") from exc
        perm = np.random.default_rng(entry["seed"]).permutation(out["X"].shape[0])
        ds = Dataset(out["X"][perm], out["y"][perm], dict(out["meta"], kind="text"), extra={"labels": out["labels"][perm]})
    else:  # the schema rejects this earlier; kept for direct library use
        raise ValueError(f"datasets.{name}.kind: {kind!r} is not one of synthetic, mnist, text")
    check_arrays(ds.X, ds.y, name=f"datasets.{name}")
    ds.meta["name"] = name
    return ds
