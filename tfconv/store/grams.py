"""The Gram store: ``results/gram/<experiment>.zarr/<run_id>/epoch=<e>`` (one owner of the format).

K (N x N float64, chunks block_size x block_size, dims i, j), blocks_done (n_blocks x n_blocks uint8,
one chunk per block), eigenvalues (eigen_index); attributes engine, block_size, n, point, run_id,
epoch, provenance and ``complete``.  A block task writes only its own chunks (K[I, J] and the mirror
K[J, I]) and then its own ``blocks_done`` element; ``complete`` and the eigenvalues (computed by the
caller, `tfconv.core.ntk.gram_eigenvalues`) are written by one finalising step after every block is
done, so an interrupted assembly resumes block by block.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Mapping, Optional, Tuple

import numpy as np

from ._zarr import StoreError, block_digest, group_attrs, json_safe, marked_complete, write_array, zarr_module

def gram_path(gram_store, rid: str, epoch: int) -> Path:
    return Path(gram_store) / rid / f"epoch={epoch}"


def block_ranges(n: int, block_size: int) -> List[Tuple[int, int]]:
    return [(s, min(s + block_size, n)) for s in range(0, n, block_size)]


def upper_blocks(n: int, block_size: int) -> List[Tuple[int, int]]:
    nb = len(block_ranges(n, block_size))
    return [(bi, bj) for bi in range(nb) for bj in range(bi, nb)]


def open_gram(gram_store, rid: str, epoch: int, mode: str = "a"):
    """The zarr group of one Gram (created by `ensure_gram`)."""
    return zarr_module().open_group(str(gram_path(gram_store, rid, epoch)), mode=mode)


def ensure_gram(gram_store, rid: str, epoch: int, n: int, block_size: int, attrs: Optional[Mapping] = None):
    """Create (idempotently) the arrays of one Gram matrix; returns the zarr group.

    An existing group with another shape or block size is an error rather than silently reused.
    """
    zarr = zarr_module()
    p = gram_path(gram_store, rid, epoch)
    nb = len(block_ranges(n, block_size))
    if (p / "K" / "zarr.json").exists() and (p / "blocks_done" / "zarr.json").exists():
        g = zarr.open_group(str(p), mode="a")
        if g.attrs.get("complete") and "eigenvalues" not in g:
            g.attrs["complete"] = False  # published but damaged: its eigenvalues are recomputed
        if g["K"].shape != (n, n) or tuple(g["K"].chunks) != (block_size, block_size):
            raise StoreError(
                f"{p}: existing Gram has shape {g['K'].shape} and chunks {g['K'].chunks}; expected "
                f"({n}, {n}) and ({block_size}, {block_size}). Delete it to rebuild with the new block size."
            )
        return g
    for parent in (Path(gram_store), Path(gram_store) / rid):
        if not (parent / "zarr.json").exists():
            zarr.open_group(str(parent), mode="a")
    g = zarr.open_group(str(p), mode="a")
    zarr.create_array(store=g.store, name=f"{g.path}/K" if g.path else "K", shape=(n, n), chunks=(block_size, block_size),
                      dtype="float64", dimension_names=["i", "j"], fill_value=np.nan, overwrite=True)
    zarr.create_array(store=g.store, name=f"{g.path}/blocks_done" if g.path else "blocks_done", shape=(nb, nb), chunks=(1, 1),
                      dtype="int64", dimension_names=["block_i", "block_j"], fill_value=0, overwrite=True)
    g.attrs.update(json_safe(dict(attrs or {}, block_size=block_size, n=n, complete=False)))
    return g


def check_gram_store(gram_store, block_size: int) -> None:
    """Refuse to resume unfinished Grams that were started with another block size (before any
    cluster starts); finished ones are kept whatever their block size."""
    p = Path(gram_store)
    if not p.is_dir():
        return
    for kz in sorted(p.glob("*/epoch=*/K/zarr.json")):
        g = kz.parent.parent
        if group_attrs(g).get("complete"):
            continue
        try:
            chunks = json.loads(kz.read_text())["chunk_grid"]["configuration"]["chunk_shape"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # an unreadable leftover is recreated by ensure_gram
        if list(chunks) != [int(block_size)] * 2:
            raise StoreError(
                f"{g}: this unfinished Gram was started with gram.block_size={chunks[0]}, the config now says "
                f"{block_size}; set gram.block_size back to {chunks[0]} to resume it, or delete {g} to start it again"
            )


def write_block(gram_group, bi: int, bj: int, block: np.ndarray, block_size: int) -> None:
    """Write block (bi, bj) and its mirror, then mark it done with the digest of its bytes (data first,
    marker last): `tfconv verify` recomputes the digest of every block from K."""
    n = gram_group["K"].shape[0]
    (r0, r1), (c0, c1) = block_ranges(n, block_size)[bi], block_ranges(n, block_size)[bj]
    K = gram_group["K"]
    K[r0:r1, c0:c1] = block
    if bi != bj:
        K[c0:c1, r0:r1] = block.T
    gram_group["blocks_done"][bi, bj] = block_digest(block)


def blocks_done(gram_group) -> np.ndarray:
    return np.asarray(gram_group["blocks_done"][...], dtype=bool)


def gram_complete(gram_store, rid: str, epoch: int) -> bool:
    """Marked complete *and* its arrays present (a Gram whose K was deleted is not complete)."""
    p = gram_path(gram_store, rid, epoch)
    return marked_complete(p) and all((p / a / "zarr.json").exists() for a in ("K", "blocks_done", "eigenvalues"))


def assembled_matrix(gram_group) -> np.ndarray:
    """K of a Gram whose every upper block is done (raises StoreError naming the missing blocks)."""
    done = blocks_done(gram_group)
    iu = np.triu_indices(done.shape[0])
    if not done[iu].all():
        missing = [(int(a), int(b)) for a, b in zip(*iu) if not done[a, b]]
        raise StoreError(f"Gram {gram_group.store}/{gram_group.path}: blocks {missing[:10]} are not done")
    K = np.asarray(gram_group["K"][...])
    if not np.all(np.isfinite(K)):
        raise StoreError(f"Gram {gram_group.path}: K has non-finite entries although every block is marked done")
    return K


def finalize_gram(gram_group, eigenvalues: np.ndarray, provenance: Optional[Mapping] = None) -> None:
    """Publish a finished Gram: its eigenvalues (computed by the caller from `assembled_matrix`),
    the provenance, then ``complete`` (last)."""
    ev = np.asarray(eigenvalues, dtype=np.float64)
    write_array(gram_group, "eigenvalues", ev, ["eigen_index"])
    gram_group.attrs["eigenvalues_digest"] = block_digest(ev)
    if provenance:
        gram_group.attrs["provenance"] = json_safe(dict(provenance))
    gram_group.attrs["complete"] = True


def read_gram(gram_store, rid: str, epoch: int) -> Tuple[np.ndarray, np.ndarray]:
    zarr = zarr_module()
    if not gram_complete(gram_store, rid, epoch):
        raise StoreError(f"Gram {rid} epoch {epoch} is missing or incomplete in {gram_store}")
    g = zarr.open_group(str(gram_path(gram_store, rid, epoch)), mode="r")
    return np.asarray(g["K"][...]), np.asarray(g["eigenvalues"][...])
