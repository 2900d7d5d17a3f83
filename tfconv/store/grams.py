"""The Gram store: ``results/gram/<experiment>.zarr/<run_id>/epoch=<e>`` (one owner of the format).

K (N x N float64, chunks block_size x block_size, dims i, j), blocks_done (n_blocks x n_blocks uint8,
one chunk per block), then either eigenvalues (eigen_index, ascending: the spectrum was computed
densely, N <= gram.spectrum_dense_max; lambda_min and lambda_max are its ends) or extremes
([lambda_min, lambda_max]: the iterative path above that size; stores finalised before this change
hold both) and, above that size when asked, slq_nodes / slq_weights (a stochastic-Lanczos-quadrature
density); attributes engine, block_size, n,
point, run_id, epoch, provenance, ``spectrum`` (per extreme value: value, method dense | lanczos |
shift_invert, iterations, residual |Kv - lambda v|, shift, Cholesky certificate [lo, hi]),
``spectrum_arrays`` (what the finalisation wrote), ``precision`` (the arithmetic K was computed in:
float64 or float32, config ``gram.precision``; absent in stores written before it: float32) and
``complete``.  lambda_min's record also holds ``rounding`` (eps_K N max diag K), ``solver_error``,
``error`` (their sum) and ``verdict`` ("resolved" / "below the precision of K"), which `check_gram`
recomputes from K.  A block task writes only its own
chunks (K[I, J] and the mirror K[J, I]) and then its own ``blocks_done`` element; ``complete`` and the
spectrum (computed by the caller, `tfconv.cluster.dask_spectra.finalize_gram`) are written by one
finalising step after every block is done, so an interrupted assembly resumes block by block.  Readers
that need only the statistics (`gram_statistics_stored`) read K panel by panel, never whole;
`check_gram` (what `tfconv verify` asks of a Gram) reads it block by block.

While a large Gram is assembled its block tasks share the samples' NTK factor rows
(`tfconv.core.ntk_structured.factor_rows`, K[I, J] = F_I F_J^T): ``factors/<block row>.npy``, one .npy
per block of rows (dtype of the Gram's precision, shape (rows, G)), each written whole to a temporary
name and renamed (a file there is complete), removed when the Gram is finalised or recreated.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import List, Mapping, Optional, Tuple

import numpy as np

from ._zarr import StoreError, block_digest, exists, group_attrs, json_safe, write_array, zarr_module

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
    if exists(p / "K") and exists(p / "blocks_done"):
        g = zarr.open_group(str(p), mode="a")
        if g.attrs.get("complete") and not all(a in g for a in _spectrum_arrays(g.attrs)):
            g.attrs["complete"] = False  # published but damaged: its spectrum is recomputed
        if g["K"].shape != (n, n) or tuple(g["K"].chunks) != (block_size, block_size):
            raise StoreError(
                f"{p}: existing Gram has shape {g['K'].shape} and chunks {g['K'].chunks}; expected "
                f"({n}, {n}) and ({block_size}, {block_size}). Delete it to rebuild with the new block size."
            )
        want = (attrs or {}).get("precision")
        if want is not None and not g.attrs.get("complete") and gram_precision(g.attrs) != want:
            raise StoreError(f"{p}: this unfinished Gram was started with gram.precision={gram_precision(g.attrs)}, "
                             f"the config now says {want}; set it back to resume, or delete {p} to start it again")
        return g
    for parent in (Path(gram_store), Path(gram_store) / rid):
        if not exists(parent):
            zarr.open_group(str(parent), mode="a")
    drop_factors(p)  # left by an earlier group of this name: not this Gram's
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


def _spectrum_arrays(attrs: Mapping) -> List[str]:
    """The arrays a published Gram's finalisation wrote (stores from before the extremes: eigenvalues)."""
    return list(attrs.get("spectrum_arrays") or ["eigenvalues"])


def gram_complete(gram_store, rid: str, epoch: int) -> bool:
    """Marked complete *and* its arrays present (a Gram whose K was deleted is not complete)."""
    p = gram_path(gram_store, rid, epoch)
    attrs = group_attrs(p)
    return bool(attrs.get("complete")) and all(
        exists(p / a) for a in ["K", "blocks_done"] + _spectrum_arrays(attrs))


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


def finalize_gram(gram_group, eigenvalues: Optional[np.ndarray] = None, provenance: Optional[Mapping] = None,
                  spectrum: Optional[Mapping] = None, slq: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> None:
    """Publish a finished Gram: its spectrum (computed by the caller), the provenance, then
    ``complete`` (last).

    ``eigenvalues``: the full ascending spectrum (dense path), or None when only the extremes are
    known; ``spectrum``: {"lambda_min": record, "lambda_max": record, ...} (`tfconv.core.spectra.
    EigenRecord.as_dict`; without it the extremes are the ends of ``eigenvalues``, method dense);
    ``slq``: (nodes, weights) of a stochastic-Lanczos-quadrature density.
    """
    spec = json_safe(dict(spectrum or {}))
    if eigenvalues is not None:
        ev = np.asarray(eigenvalues, dtype=np.float64)
        for k, v in (("lambda_min", ev[0]), ("lambda_max", ev[-1])):
            spec.setdefault(k, {"value": float(v), "method": "dense", "iterations": 0, "residual": None})
    if "lambda_min" not in spec or "lambda_max" not in spec:
        raise ValueError("finalize_gram needs the eigenvalues or a spectrum with lambda_min and lambda_max")
    if eigenvalues is not None:  # the extremes are its ends: no second array (two files fewer per Gram)
        write_array(gram_group, "eigenvalues", ev, ["eigen_index"])
        gram_group.attrs["eigenvalues_digest"] = block_digest(ev)
        arrays = ["eigenvalues"]
    else:
        ext = np.asarray([spec["lambda_min"]["value"], spec["lambda_max"]["value"]], dtype=np.float64)
        write_array(gram_group, "extremes", ext, ["extreme"])
        gram_group.attrs["extremes_digest"] = block_digest(ext)
        arrays = ["extremes"]
    if slq is not None:
        write_array(gram_group, "slq_nodes", np.asarray(slq[0], dtype=np.float64), ["slq_node"])
        write_array(gram_group, "slq_weights", np.asarray(slq[1], dtype=np.float64), ["slq_node"])
        arrays += ["slq_nodes", "slq_weights"]
    gram_group.attrs["spectrum"] = spec
    gram_group.attrs["spectrum_arrays"] = arrays
    if provenance:
        gram_group.attrs["provenance"] = json_safe(dict(provenance))
    drop_factors(group_dir(gram_group))
    gram_group.attrs["complete"] = True


FACTORS = "factors"


def group_dir(gram_group) -> Path:
    """The folder of a Gram's zarr group."""
    root = Path(str(gram_group.store.root))
    return root / gram_group.path if gram_group.path else root


def factor_file(gram_group, bi: int) -> Path:
    """Where block row ``bi``'s factor rows are kept while the Gram is assembled."""
    return group_dir(gram_group) / FACTORS / f"{int(bi)}.npy"


def write_factors(gram_group, bi: int, F: np.ndarray) -> None:
    """Keep block row ``bi``'s factor rows (n_rows, G): written whole under a temporary name, then
    renamed, so that a file under its final name is complete (two writers of the same rows write the
    same numbers; the last rename wins)."""
    path = factor_file(gram_group, bi)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.lib.format.write_array(fh, np.asarray(F), allow_pickle=False)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_factors(gram_group, bi: int, out: np.ndarray) -> bool:
    """Read block row ``bi``'s factor rows into ``out`` (its shape and dtype are what the caller
    expects); False when there is no such file or it holds another shape or dtype (then the caller
    computes them again)."""
    path = factor_file(gram_group, bi)
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = header(fh)
            if tuple(shape) != out.shape or fortran or np.dtype(dtype) != out.dtype or not out.flags.c_contiguous:
                return False
            return fh.readinto(memoryview(out).cast("B")) == out.nbytes
    except (OSError, ValueError):
        return False


def drop_factors(folder) -> None:
    """Remove a Gram's kept factor rows (`write_factors`)."""
    shutil.rmtree(Path(folder) / FACTORS, ignore_errors=True)


def check_gram(gram_store, rid: str, epoch: int) -> List[str]:
    """What is wrong with the content of one published Gram ([] when nothing): every block's digest
    (recorded by its writer) recomputed from K, the mirror blocks equal, K finite; the eigenvalues
    (or extremes) match their digests, the eigenvalues sum to trace K, the extremes agree with diag K
    and trace K and with the ``spectrum`` records.  K is read block by block (one Zarr chunk each),
    never whole: memory O(block_size^2)."""
    g = open_gram(gram_store, rid, epoch, mode="r")
    block_size = int(g.attrs.get("block_size", 0))
    digests = np.asarray(g["blocks_done"][...])
    Kz = g["K"]
    n = Kz.shape[0]
    ranges = block_ranges(n, block_size)
    why = []
    bad_blocks = []
    diag = np.full(n, np.nan)
    nonfinite = 0
    for bi, bj in upper_blocks(n, block_size):
        (r0, r1), (c0, c1) = ranges[bi], ranges[bj]
        blk = np.asarray(Kz[r0:r1, c0:c1])
        mirror = blk.T if bi == bj else np.asarray(Kz[c0:c1, r0:r1])
        nonfinite += int(np.sum(~np.isfinite(blk))) + (0 if bi == bj else int(np.sum(~np.isfinite(mirror))))
        if bi == bj:
            diag[r0:r1] = np.diag(blk)
        if digests[bi, bj] == 0:
            bad_blocks.append((bi, bj, "not done"))
        elif digests[bi, bj] != 1 and block_digest(blk) != digests[bi, bj]:
            bad_blocks.append((bi, bj, "changed"))
        elif bi != bj and not np.array_equal(mirror, blk.T):
            bad_blocks.append((bi, bj, "mirror differs"))
    if bad_blocks:
        why.append(f"{len(bad_blocks)} block(s) damaged: " + ", ".join(f"({a},{b}) {w}" for a, b, w in bad_blocks[:5]))
    finite = nonfinite == 0
    if not finite:
        why.append(f"{nonfinite} non-finite entries")
    trace = float(diag.sum())
    ext = None  # [lambda_min, lambda_max]: the extremes array (iterative path), else the eigenvalues' ends
    if "extremes" in g:
        ext = np.asarray(g["extremes"][...])
        rec = g.attrs.get("extremes_digest")
        if rec is not None and block_digest(ext) != rec:
            why.append("its extreme eigenvalues do not match their recorded digest")
            ext = None
        elif ext.shape != (2,) or not np.all(np.isfinite(ext)):
            why.append(f"extreme eigenvalues of shape {ext.shape} or non-finite")
            ext = None
    if "eigenvalues" in g or "extremes" not in g:  # dense Grams (and stores from before the extremes)
        ev = np.asarray(g["eigenvalues"][...])
        rec = g.attrs.get("eigenvalues_digest")
        if rec is not None and block_digest(ev) != rec:
            why.append("its eigenvalues do not match their recorded digest")
        elif ev.shape != (n,) or not np.all(np.isfinite(ev)):
            why.append(f"eigenvalues of shape {ev.shape} or non-finite")
        else:
            if finite and abs(ev.sum() - trace) > 1e-8 * max(abs(trace), 1e-300):
                why.append(f"its eigenvalues sum to {ev.sum():.6g} but trace K is {trace:.6g}")
            if ext is None and "extremes" not in g:
                ext = np.asarray([ev[0], ev[-1]])
    if ext is not None and finite:
        why += _check_error_records(g.attrs, n, float(np.max(diag)) if n else 0.0, float(ext[0]))
    if ext is not None:
        if finite:
            d = diag  # Rayleigh quotients of unit vectors: lambda_min <= K_ii <= lambda_max
            slack = 1e-8 * max(abs(float(ext[1])), 1e-300)
            if not (ext[0] <= d.min() + slack and d.max() <= ext[1] + slack and ext[1] <= trace + slack):
                why.append(f"its extreme eigenvalues [{ext[0]:.6g}, {ext[1]:.6g}] contradict diag K in "
                           f"[{d.min():.6g}, {d.max():.6g}] or trace K {trace:.6g}")
        recs = g.attrs.get("spectrum") or {}  # the records name the same values as the arrays
        for i, k in enumerate(("lambda_min", "lambda_max")):
            v = (recs.get(k) or {}).get("value")
            if v is not None and float(v) != float(ext[i]):
                why.append(f"its spectrum record {k} = {float(v):.17g} differs from the stored {float(ext[i]):.17g}")
    return why


def gram_precision(attrs: Mapping) -> str:
    """The precision a stored Gram was computed in (its ``precision`` attribute); a Gram written before
    the setting existed was computed in its run's training dtype (float32 by default): float32."""
    return str(attrs.get("precision") or "float32")


def _check_error_records(attrs: Mapping, n: int, max_diag: float, lambda_min: float) -> List[str]:
    """What is wrong with lambda_min's error and verdict ([] when nothing): the precision is one of the
    known ones, the rounding level equals eps_K N max diag K recomputed from the stored K, the error is
    rounding + solver_error (>= the rounding), the verdict is the one the value and error give, and a
    certificate (lo, hi] holds the value (with the error as slack)."""
    from ..core.spectra import PRECISIONS, rounding_level, verdict_of

    rec = (attrs.get("spectrum") or {}).get("lambda_min") or {}
    recorded = all(rec.get(k) is not None for k in ("verdict", "error", "rounding"))
    if not recorded:  # a Gram finalised before the error estimates (and the precision) existed: nothing to check
        return [] if attrs.get("precision") is None else ["its lambda_min record has no error estimate or verdict"]
    precision = gram_precision(attrs)
    if precision not in PRECISIONS:
        return [f"its precision attribute is {precision!r}, not one of {list(PRECISIONS)}"]
    why = []
    rounding, error, solver = float(rec["rounding"]), float(rec["error"]), rec.get("solver_error")
    want = rounding_level(max_diag, n, precision)
    if not abs(rounding - want) <= 1e-9 * max(abs(want), 1e-300):
        why.append(f"its lambda_min rounding level {rounding:.6g} is not eps_K N max diag K = {want:.6g} ({precision})")
    if solver is None or not (error >= rounding and abs(error - rounding - float(solver)) <= 1e-9 * max(error, 1e-300)):
        why.append(f"its lambda_min error {error:.6g} is not rounding {rounding:.6g} + solver error {solver}")
    verdict = verdict_of(lambda_min, error)
    if rec["verdict"] != verdict:
        why.append(f"its lambda_min verdict is {rec['verdict']!r} but value {lambda_min:.6g} and error {error:.6g} "
                   f"give {verdict!r}")
    cert = rec.get("certificate")
    if cert is not None:
        lo = -np.inf if cert[0] is None else float(cert[0])
        hi = np.inf if cert[1] is None else float(cert[1])
        if not (lo - error < lambda_min <= hi + error):
            why.append(f"its lambda_min {lambda_min:.6g} lies outside its certificate ({lo:.6g}, {hi:.6g}] "
                       f"by more than its error {error:.3g}")
    return why


def _open_complete(gram_store, rid: str, epoch: int):
    if not gram_complete(gram_store, rid, epoch):
        raise StoreError(f"Gram {rid} epoch {epoch} is missing or incomplete in {gram_store}")
    return zarr_module().open_group(str(gram_path(gram_store, rid, epoch)), mode="r")


def read_gram(gram_store, rid: str, epoch: int) -> Tuple[np.ndarray, np.ndarray]:
    """(K, eigenvalues) of a Gram whose spectrum was computed densely (reads K whole: small N only;
    `read_spectrum` and `gram_statistics_stored` work for every Gram)."""
    g = _open_complete(gram_store, rid, epoch)
    if "eigenvalues" not in g:
        raise StoreError(f"Gram {rid} epoch {epoch} in {gram_store} has only its extreme eigenvalues "
                         f"(N = {g['K'].shape[0]} > gram.spectrum_dense_max when it was finalised); "
                         "use read_spectrum / gram_statistics_stored")
    return np.asarray(g["K"][...]), np.asarray(g["eigenvalues"][...])


def read_spectrum(gram_store, rid: str, epoch: int) -> dict:
    """What a published Gram knows of its spectrum without reading K: {"lambda_min", "lambda_max"
    (floats), "records" (the ``spectrum`` attribute), "eigenvalues" (array or None), "slq"
    ((nodes, weights) or None)}."""
    g = _open_complete(gram_store, rid, epoch)
    ev = np.asarray(g["eigenvalues"][...]) if "eigenvalues" in g else None
    if ev is not None:  # dense: the extremes are the ends of the stored spectrum
        lo, hi = float(ev[0]), float(ev[-1])
    else:  # iterative: only the extremes are stored
        lo, hi = (float(x) for x in np.asarray(g["extremes"][...]))
    return {"lambda_min": lo, "lambda_max": hi, "records": dict(g.attrs.get("spectrum") or {}), "eigenvalues": ev,
            "slq": (np.asarray(g["slq_nodes"][...]), np.asarray(g["slq_weights"][...])) if "slq_nodes" in g else None}


def gram_statistics_stored(gram_store, rid: str, epoch: int, ref_epoch: Optional[int] = None,
                           panel_bytes: int = 64 << 20) -> dict:
    """lambda_min, lambda_max (stored), trace and |K - K_ref|_F / |K_ref|_F of one published Gram,
    reading K (and K_ref) in row panels of at most ``panel_bytes``: the values of
    `tfconv.core.ntk.gram_statistics` without K whole in memory; plus lambda_min's error, verdict and
    certificate bracket (`lambda_min_assessment`)."""
    sp = read_spectrum(gram_store, rid, epoch)
    K = _open_complete(gram_store, rid, epoch)["K"]
    same = ref_epoch is not None and int(ref_epoch) == int(epoch)  # K_0 against itself: change 0
    K0 = _open_complete(gram_store, rid, ref_epoch)["K"] if ref_epoch is not None and not same else None
    n = K.shape[0]
    if K0 is not None and K0.shape != K.shape:
        raise StoreError(f"Gram {rid}: epoch {epoch} is {K.shape}, the reference epoch {ref_epoch} is {K0.shape}")
    chunk = int(K.chunks[0])
    rows = max(chunk, (panel_bytes // (8 * n)) // chunk * chunk)
    trace, d2, r2 = 0.0, 0.0, 0.0
    for r0 in range(0, n, rows):
        r1 = min(r0 + rows, n)
        P = np.asarray(K[r0:r1, :])
        trace += float(np.trace(P[:, r0:r1]))
        if K0 is not None:
            P0 = np.asarray(K0[r0:r1, :])
            d2 += float(np.sum((P - P0) ** 2))
            r2 += float(np.sum(P0 ** 2))
    out = {"lambda_min": sp["lambda_min"], "lambda_max": sp["lambda_max"], "kernel_trace": trace,
           "kernel_change": 0.0 if same else float(np.sqrt(d2) / np.sqrt(r2)) if K0 is not None else np.nan}
    out.update(lambda_min_assessment(sp["records"]))
    return out


def lambda_min_assessment(records: Mapping) -> dict:
    """lambda_min's error, verdict and certificate bracket from a Gram's ``spectrum`` records:
    {"lambda_min_error", "lambda_min_verdict", "lambda_min_bracket_low", "lambda_min_bracket_high"}
    (NaN / "" where the Gram did not record them: an open side of a bracket, a Gram from before)."""
    rec = dict(records.get("lambda_min") or {})
    cert = rec.get("certificate") or [None, None]

    def num(v):
        return float(v) if v is not None else np.nan
    return {"lambda_min_error": num(rec.get("error")), "lambda_min_verdict": str(rec.get("verdict") or ""),
            "lambda_min_bracket_low": num(cert[0]), "lambda_min_bracket_high": num(cert[1])}
