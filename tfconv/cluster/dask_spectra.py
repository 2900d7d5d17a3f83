"""Extreme eigenvalues of a Zarr-stored Gram matrix with Dask, without K ever whole in one process.

* `zarr_matvec`: ``K @ V`` for an (n,) or (n, m) V, one Dask task per row panel of K.  A task reads
  the upper part of its panel (columns from its first row on) in slabs of at most ``panel_bytes``
  and returns the panel's contribution to both sides of the symmetric product (K is read once per
  product, half of it); the driver sums n x m partial vectors.
* `zarr_cholesky`: blocked left-looking Cholesky of ``K - sigma I`` into a Zarr array next to K
  (tiles of ``tile`` rows, one Dask task and one chunk per lower tile, written once; a task holds at
  most four tiles).  The diagonal tile's LAPACK dpotrf reports the first failing column; the tasks
  that depend on it return without work.
* `ZarrCholesky.solve`: ``(K - sigma I)^-1 B`` by blocked forward and back substitution (one task per
  lower tile and pass, the small vectors travel through Dask).
* `ZarrGramOperator`: the scipy LinearOperator of K (counts its products).
* `gram_spectrum`: the records of `tfconv.core.spectra` for one stored Gram: dense ``eigvalsh`` up to
  ``dense_max`` rows, else Lanczos (lambda_max), shift-invert Lanczos with the out-of-core factor
  (lambda_min, stopped in absolute terms against the precision of K), the certificate and, if asked, a
  stochastic-Lanczos-quadrature density (`SpectrumSettings`); lambda_min with its error and verdict.
* `finalize_gram`: once every block of a Gram is done, its spectrum as records, then the store
  publishes it (`tfconv.store.finalize_gram`): what `tfconv.cluster.dask_gram` calls per Gram.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from ..core import spectra as S

#: Name of the factor array written next to K (scratch: removed after the spectra unless kept).
FACTOR = "cholesky"


# ----------------------------------------------------------------------------------------------
# Worker-side helpers (plain functions of paths: any process can run them)
# ----------------------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _array(path: str, stamp: int):
    import zarr

    return zarr.open_array(path, mode="r")


def _open(path: str, mode: str = "r"):
    """A Zarr array; read-only handles are cached per process, keyed by the metadata's mtime (a
    factor re-created at the same path is reopened)."""
    if mode == "r":
        from ..store import modified_ns

        return _array(path, modified_ns(path))
    import zarr

    return zarr.open_array(path, mode=mode)


def _panel_product(k_path: str, r0: int, r1: int, slab: int, V: np.ndarray) -> np.ndarray:
    """Contribution of row panel [r0, r1) of symmetric K to K @ V, read from column r0 on."""
    from ..store import StoreError

    K = _open(k_path)
    n = K.shape[0]
    out = np.zeros((n, V.shape[1]))
    for c0 in range(r0, n, slab):
        c1 = min(c0 + slab, n)
        blk = np.asarray(K[r0:r1, c0:c1])
        if not np.all(np.isfinite(blk)):
            raise StoreError(f"{k_path}: K[{r0}:{r1}, {c0}:{c1}] has non-finite entries (a block not written?)")
        d1 = min(max(r1, c0), c1)  # columns [c0, d1) lie in the panel's diagonal square
        if d1 > c0:
            out[r0:r1] += blk[:, :d1 - c0] @ V[c0:d1]
        if c1 > d1:  # strictly upper part: it and its mirror
            up = blk[:, d1 - c0:]
            out[r0:r1] += up @ V[d1:c1]
            out[d1:c1] += up.T @ V[r0:r1]
    return out


def _tile(a, i: int, j: int, T: int, n: int) -> np.ndarray:
    return np.asarray(a[i * T:min((i + 1) * T, n), j * T:min((j + 1) * T, n)], dtype=np.float64)


def _chol_tile(k_path: str, l_path: str, i: int, k: int, T: int, sigma: float, deps: Sequence[Any]) -> Dict[str, Any]:
    """L[i, k] of the left-looking Cholesky of K - sigma I (i >= k); ``deps`` are the results of the
    tiles it needs (any failure propagates without work)."""
    from scipy.linalg import solve_triangular
    from scipy.linalg.lapack import dpotrf

    for d in deps:
        if not d["ok"]:
            return d
    K = _open(k_path)
    L = _open(l_path, "r+")
    n = K.shape[0]
    A = _tile(K, i, k, T, n)
    for j in range(k):
        A -= _tile(L, i, j, T, n) @ _tile(L, k, j, T, n).T
    if i == k:
        if sigma:
            A[np.diag_indices_from(A)] -= sigma
        c, info = dpotrf(A, lower=1, clean=1, overwrite_a=1)
        if info != 0:
            return {"ok": False, "column": k * T + int(info) - 1, "tile": (i, k)}
        L[i * T:i * T + c.shape[0], k * T:k * T + c.shape[1]] = c
        return {"ok": True, "tile": (i, k)}
    Lkk = _tile(L, k, k, T, n)
    X = solve_triangular(Lkk, A.T, lower=True, check_finite=False).T  # X Lkk^T = A
    L[i * T:i * T + X.shape[0], k * T:k * T + X.shape[1]] = X
    return {"ok": True, "tile": (i, k)}


def _fwd_diag(l_path: str, k: int, T: int, b: np.ndarray, updates: Sequence[np.ndarray]) -> np.ndarray:
    from scipy.linalg import solve_triangular

    L = _open(l_path)
    rhs = b - sum(updates) if updates else b
    return solve_triangular(_tile(L, k, k, T, L.shape[0]), rhs, lower=True, check_finite=False)


def _fwd_off(l_path: str, i: int, k: int, T: int, y: np.ndarray) -> np.ndarray:
    L = _open(l_path)
    return _tile(L, i, k, T, L.shape[0]) @ y


def _bwd_diag(l_path: str, k: int, T: int, y: np.ndarray, updates: Sequence[np.ndarray]) -> np.ndarray:
    from scipy.linalg import solve_triangular

    L = _open(l_path)
    rhs = y - sum(updates) if updates else y
    return solve_triangular(_tile(L, k, k, T, L.shape[0]), rhs, lower=True, trans="T", check_finite=False)


def _bwd_off(l_path: str, i: int, k: int, T: int, x: np.ndarray) -> np.ndarray:
    L = _open(l_path)
    return _tile(L, i, k, T, L.shape[0]).T @ x


# ----------------------------------------------------------------------------------------------
# Driver side
# ----------------------------------------------------------------------------------------------


def _k_chunk(k_path: str) -> int:
    return int(_open(k_path).chunks[0])


def panel_rows(n: int, chunk: int, panel_bytes: int) -> Tuple[int, int]:
    """(rows per panel, columns per slab): multiples of the K chunk, a slab of at most panel_bytes."""
    rows = chunk * max(1, int(math.sqrt(panel_bytes / 8)) // chunk)
    rows = min(rows, chunk * math.ceil(n / chunk))
    slab = chunk * max(1, (panel_bytes // (8 * rows)) // chunk)
    return rows, slab


def zarr_matvec(client, k_path: str, V: np.ndarray, panel_bytes: int = 128 << 20) -> np.ndarray:
    """``K @ V`` for the symmetric K stored at ``k_path`` (a Zarr array), one task per row panel."""
    V = np.asarray(V, dtype=np.float64)
    vec = V.ndim == 1
    V2 = V.reshape(V.shape[0], -1)
    n = _open(k_path).shape[0]
    if V2.shape[0] != n:
        raise ValueError(f"V has {V2.shape[0]} rows, K is {n} x {n}")
    rows, slab = panel_rows(n, _k_chunk(k_path), panel_bytes)
    # hash=False: a key of its own per call.  With content-hashed keys, two calls with the same V share
    # one key, and the first call's release of it could race the second call's tasks ("lost dependencies").
    Vf = client.scatter(V2, broadcast=True, hash=False)
    futs = [client.submit(_panel_product, k_path, r0, min(r0 + rows, n), slab, Vf, pure=False)
            for r0 in range(0, n, rows)]
    out = np.zeros_like(V2)
    from distributed import as_completed

    for f in as_completed(futs):
        out += f.result()
        f.release()
    return out.reshape(n) if vec else out


def default_tile(n: int, chunk: int, target: int = 4096) -> int:
    """Cholesky tile: a multiple of the K chunk near ``target`` rows (4 tiles of 4096^2 float64 =
    512 MiB per task)."""
    return min(chunk * max(1, round(target / chunk)), chunk * math.ceil(n / chunk))


class ZarrCholesky:
    """A lower factor L L^T = K - sigma I stored in Zarr (tiles T x T; upper tiles never written)."""

    def __init__(self, client, l_path: str, n: int, tile: int, sigma: float):
        self.client, self.l_path, self.n, self.T, self.sigma = client, l_path, n, tile, sigma
        self.solves = 0

    @property
    def nt(self) -> int:
        return math.ceil(self.n / self.T)

    def dense(self) -> np.ndarray:
        """L as a dense array (tests, small n only)."""
        return np.tril(np.asarray(_open(self.l_path)[...]))

    def solve(self, B: np.ndarray) -> np.ndarray:
        """(K - sigma I)^-1 B by forward and back substitution over the tiles."""
        c, T, nt = self.client, self.T, self.nt
        B = np.asarray(B, dtype=np.float64)
        vec = B.ndim == 1
        B2 = B.reshape(self.n, -1)
        rng = [(k * T, min((k + 1) * T, self.n)) for k in range(nt)]
        y, upd = [None] * nt, {}
        for k in range(nt):  # forward: L y = b
            deps = [upd.pop((k, j)) for j in range(k)]
            y[k] = c.submit(_fwd_diag, self.l_path, k, T, B2[rng[k][0]:rng[k][1]], deps, pure=False, priority=nt - k)
            for i in range(k + 1, nt):
                upd[(i, k)] = c.submit(_fwd_off, self.l_path, i, k, T, y[k], pure=False, priority=nt - k)
        x = [None] * nt
        for k in reversed(range(nt)):  # back: L^T x = y
            deps = [upd.pop((k, i)) for i in range(k + 1, nt)]
            x[k] = c.submit(_bwd_diag, self.l_path, k, T, y[k], deps, pure=False, priority=k + 1)
            for j in range(k):
                upd[(j, k)] = c.submit(_bwd_off, self.l_path, k, j, T, x[k], pure=False, priority=k + 1)
        out = np.concatenate(c.gather(x), axis=0)
        self.solves += 1
        return out.reshape(self.n) if vec else out


def zarr_cholesky(client, k_path: str, l_path: str, sigma: float = 0.0, tile: Optional[int] = None,
                  log: Callable[[str], None] = lambda s: None) -> Tuple[Optional[ZarrCholesky], Optional[int]]:
    """Blocked left-looking Cholesky of ``K - sigma I`` into a new Zarr array at ``l_path``.

    Returns (factor, None) on success, (None, first failing column) when K - sigma I is not
    numerically positive definite (then lambda_min(K) <= sigma).  Tasks form the whole DAG at once:
    tile (i, k) needs tiles (i, j) and (k, j) for j < k and the diagonal (k, k); diagonal tiles and
    the tiles that feed the next diagonal run first.
    """
    import zarr

    K = _open(k_path)
    n = K.shape[0]
    T = int(tile or default_tile(n, int(K.chunks[0])))
    nt = math.ceil(n / T)
    zarr.create_array(store=str(l_path), shape=(n, n), chunks=(T, T), dtype="float64", fill_value=0.0,
                      compressors=None, overwrite=True, dimension_names=["i", "j"])
    futs: Dict[Tuple[int, int], Any] = {}
    for k in range(nt):
        for i in range(k, nt):
            deps = [futs[(i, j)] for j in range(k)] + [futs[(k, j)] for j in range(k) if i != k]
            if i != k:
                deps.append(futs[(k, k)])
            prio = 3 * (nt - k) + (2 if i == k else 1 if i == k + 1 else 0)  # diagonals, then the next one
            futs[(i, k)] = client.submit(_chol_tile, k_path, str(l_path), i, k, T, float(sigma), deps,
                                         pure=False, priority=prio, key=f"chol-{Path(l_path).name}-{sigma:.6g}-{i}-{k}-{time.time_ns()}")
    failed = None
    try:
        for k in range(nt):
            r = futs[(k, k)].result()
            if not r["ok"]:
                failed = int(r["column"])
                break
            if nt >= 5 and (k + 1) % (nt // 5) == 0:
                log(f"[spectra] Cholesky of K - ({sigma:.3g}) I: {k + 1}/{nt} tile columns")
        if failed is None:
            for f in futs.values():
                r = f.result()
                if not r["ok"]:  # cannot happen after every diagonal succeeded
                    failed = int(r.get("column", -1))
    finally:
        # Drain rather than cancel: a cancelled task that is already running would still write its
        # tile, possibly into the next factorisation at this path.  Tasks downstream of a failed
        # diagonal return at once; only tiles of earlier columns still do their work.
        from distributed import wait

        wait(list(futs.values()))
        for f in futs.values():
            f.release()
    if failed is not None:
        return None, failed
    return ZarrCholesky(client, str(l_path), n, T, float(sigma)), None


class ZarrGramOperator:
    """K stored in Zarr as a scipy.sparse.linalg.LinearOperator (``.op``); ``products`` counts the
    columns multiplied so far."""

    def __init__(self, client, k_path: str, panel_bytes: int = 128 << 20):
        from scipy.sparse.linalg import LinearOperator

        self.client, self.k_path, self.panel_bytes = client, str(k_path), panel_bytes
        self.n = int(_open(self.k_path).shape[0])
        self.products = 0
        self.seconds = 0.0
        self.op = LinearOperator((self.n, self.n), matvec=self.matvec, matmat=self.matvec, dtype=np.float64)

    def matvec(self, V: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        out = zarr_matvec(self.client, self.k_path, V, self.panel_bytes)
        self.products += 1
        self.seconds += time.perf_counter() - t0
        return out

    __call__ = matvec


@dataclass(frozen=True)
class SpectrumSettings:
    """How a Gram's spectrum is computed (config ``gram.spectrum_*``).

    ``dense_max``: up to this many rows every eigenvalue by dense ``eigvalsh`` (K read whole), above
    it the iterative path; ``tol`` and ``maxiter``: the Lanczos iterations' relative residual target
    and limit (lambda_min also stops in absolute terms, `tfconv.core.spectra.certified_lambda_min`);
    ``certificate_rtol``: the Cholesky certificate tried at lambda_min (1 - rtol), 0 for none (the
    bracket's top is the Rayleigh quotient either way); ``slq_vectors`` / ``slq_steps``: a
    stochastic-Lanczos-quadrature density (0 vectors: none); out of core: the Cholesky ``tile`` (rows; None: `default_tile`), ``keep_factor`` (keep the factor
    next to K) and ``panel_bytes`` (the slab a matrix-vector task reads at once)."""

    dense_max: int = 4096
    tol: float = 1e-10
    maxiter: int = 300
    certificate_rtol: float = 0.0
    slq_vectors: int = 0
    slq_steps: int = 30
    tile: Optional[int] = None
    keep_factor: bool = False
    panel_bytes: int = 128 << 20


def _max_diag(k_path: str) -> float:
    """max_i K_ii of the stored K, read one diagonal chunk at a time (memory: one chunk)."""
    K = _open(k_path)
    n, c = K.shape[0], int(K.chunks[0])
    return max(float(np.max(np.diag(np.asarray(K[i:min(i + c, n), i:min(i + c, n)])))) for i in range(0, n, c))


def gram_spectrum(group_path: str, client=None, settings: Optional[SpectrumSettings] = None,
                  log: Callable[[str], None] = lambda s: None) -> Dict[str, Any]:
    """Extreme eigenvalues of the Gram stored in the Zarr group at ``group_path`` (arrays K, ...), with
    lambda_min's error and verdict against the precision of K (the group's ``precision`` attribute:
    the arithmetic that computed K, float64 unless it says float32; `tfconv.core.spectra.rounding_level`).

    n <= dense_max: K is read whole and decomposed densely (`tfconv.core.spectra.dense_extremes`;
    the full spectrum is returned as ``eigenvalues``).  Above: the iterative path with ``client``,
    K read panel by panel; lambda_max by Lanczos, lambda_min by `tfconv.core.spectra.certified_lambda_min`
    (out-of-core Cholesky, shift-invert stopped in absolute terms, the certificate); the factor lives in
    ``<group>/cholesky`` (removed before the certificate's trial factor is written, unless
    ``keep_factor``).  ``settings``: `SpectrumSettings` (its defaults without).  Returns
    {"lambda_min": EigenRecord, "lambda_max": EigenRecord, "eigenvalues" (dense only), "slq":
    (nodes, weights) or None, "seconds": {...}, "method": "dense"|"iterative", "precision"}.
    """
    import shutil

    import zarr

    from .. import store

    st = settings or SpectrumSettings()
    dense_max, tol, maxiter, certificate_rtol = st.dense_max, st.tol, st.maxiter, st.certificate_rtol
    tile, slq_vectors, slq_steps, keep_factor, panel_bytes = (st.tile, st.slq_vectors, st.slq_steps, st.keep_factor,
                                                              st.panel_bytes)
    g = Path(group_path)
    k_path = str(g / "K")
    n = int(_open(k_path).shape[0])
    attrs = zarr.open_group(str(g), mode="r").attrs
    precision = store.gram_precision(attrs)
    rank_bound = attrs.get("rank_bound")  # rank K <= it whatever the parameters (`ntk_structured.rank_bound`)
    t0 = time.perf_counter()
    if n <= dense_max:
        Kd = store.assembled_matrix(zarr.open_group(str(g), mode="r"))
        rec = S.dense_extremes(0.5 * (Kd + Kd.T), precision=precision)
        del Kd
        ev = rec["lambda_min"].notes.pop("eigenvalues")
        return {"lambda_min": rec["lambda_min"], "lambda_max": rec["lambda_max"], "eigenvalues": ev, "slq": None,
                "method": "dense", "precision": precision, "seconds": {"total": time.perf_counter() - t0}}
    if client is None:
        raise ValueError(f"the Gram at {group_path} has n = {n} > gram.spectrum_dense_max = {dense_max}: "
                         "its iterative spectrum needs a Dask client")
    done = store.blocks_done(zarr.open_group(str(g), mode="r"))
    if not done[np.triu_indices(done.shape[0])].all():
        raise store.StoreError(f"{group_path}: not every block of K is done; finish the assembly first")
    op = ZarrGramOperator(client, k_path, panel_bytes)
    secs: Dict[str, float] = {}

    def progress(what: str, step: str, invert: bool = False, sigma: float = 0.0, every: float = 30.0):
        """A log line at most every ``every`` seconds while a Lanczos iteration runs."""
        state = {"t": time.perf_counter(), "t0": time.perf_counter()}

        def cb(k: int, theta: float, est: float) -> None:
            now = time.perf_counter()
            if now - state["t"] >= every:
                state["t"] = now
                value = sigma + 1.0 / theta if invert and theta else theta
                log(f"[spectra] {what}: {k} {step} of at most {maxiter}, estimate {value:.6g}, "
                    f"residual estimate / target {est / max(abs(theta), 1e-300) / tol:.3g}, {now - state['t0']:.0f}s")
        return cb

    rmax = S.lambda_max_lanczos(op, n, tol=tol, maxiter=maxiter, progress=progress("lambda_max by Lanczos", "products"))
    secs["lambda_max"] = time.perf_counter() - t0
    log(f"[spectra] lambda_max {rmax.value:.6g} by Lanczos: {rmax.iterations} products, residual {rmax.residual:.3g}, "
        f"{secs['lambda_max']:.0f}s")
    t1 = time.perf_counter()
    rounding = S.rounding_level(_max_diag(k_path), n, precision)
    S.assess_lambda_min(rmax, rounding, rmax.value).verdict = ""
    secs["max_diag"] = time.perf_counter() - t1
    l_path = str(g / FACTOR)
    trial_path = str(g / (FACTOR + "_trial"))
    used: Dict[str, Any] = {}

    def chol(sig: float):
        fac, col = zarr_cholesky(client, k_path, l_path, sig, tile, log)
        if fac is not None:
            used["factor"] = fac
            return fac.solve, None
        return None, col

    def trial(sig: float):
        f, col = zarr_cholesky(client, k_path, trial_path, sig, tile, log)
        return f is not None, col

    def release():
        if not keep_factor:  # the factor is done with; free its disk before the trials write theirs
            shutil.rmtree(l_path, ignore_errors=True)

    try:
        rmin, phase = S.certified_lambda_min(
            op, n, chol, rmax.value, rounding, tol=tol, maxiter=maxiter, certificate_rtol=certificate_rtol,
            trial=trial, log=log, release=release, rank_bound=rank_bound,
            progress=progress("lambda_min by shift-invert", "solves", True, 0.0))
        secs.update(phase)
        slq = None
        if slq_vectors > 0:
            t1 = time.perf_counter()
            slq = S.slq_density(op, n, slq_vectors, slq_steps)
            secs["slq"] = time.perf_counter() - t1
    finally:
        shutil.rmtree(trial_path, ignore_errors=True)
        if not keep_factor:
            shutil.rmtree(l_path, ignore_errors=True)
    secs["total"] = time.perf_counter() - t0
    rmax.notes["seconds_products"] = op.seconds
    return {"lambda_min": rmin, "lambda_max": rmax, "eigenvalues": None, "slq": slq, "method": "iterative",
            "precision": precision, "seconds": secs, "products": op.products,
            "solves": used["factor"].solves if "factor" in used else 0}


# ----------------------------------------------------------------------------------------------
# Finalisation: the spectrum of an assembled Gram, then its publication
# ----------------------------------------------------------------------------------------------


def finalize_gram(gram_group, provenance: Optional[Dict[str, Any]] = None, client=None,
                  settings: Optional[SpectrumSettings] = None,
                  log: Optional[Callable[[str], None]] = None) -> np.ndarray:
    """Once every block of a Gram is done: its spectrum (`gram_spectrum`), then the store publishes it
    as complete (`tfconv.store.finalize_gram`).

    N <= ``settings.dense_max``: every eigenvalue by dense float64 ``eigvalsh`` (K read whole).
    Above: K is never read whole; lambda_max by Lanczos and lambda_min by shift-invert Lanczos with
    an out-of-core Cholesky factor, both over the Zarr-stored K with Dask (``client``), plus the
    Cholesky certificate.  Every value is stored with its method, iterations and residual.  Returns
    the eigenvalues (ascending), or [lambda_min, lambda_max] when only the extremes are known.
    """
    from .. import store

    st = settings or SpectrumSettings()
    path = str(store.group_dir(gram_group))
    store.drop_factors(path)  # every block is done: the shared factor rows free their disk before the spectra
    out = gram_spectrum(path, client, st, log=log or (lambda s: None))
    spec = {k: spectrum_record(out[k]) for k in ("lambda_min", "lambda_max")}
    spec.update(computed=out["method"], dense_max=int(st.dense_max), seconds=out["seconds"], precision=out["precision"])
    ev = out["eigenvalues"]
    store.finalize_gram(gram_group, ev, provenance, spectrum=spec, slq=out.get("slq"))
    return ev if ev is not None else np.asarray([spec["lambda_min"]["value"], spec["lambda_max"]["value"]])


def spectrum_record(rec: S.EigenRecord) -> Dict[str, Any]:
    """An EigenRecord as the store keeps it (JSON: NaN as null; the certificate trials, the error
    (rounding, solver_error, error) and the verdict kept, bulky notes dropped)."""
    d = rec.as_dict()
    notes = d.pop("notes", {}) or {}
    d["certificate_trials"] = notes.get("certificate_trials")
    d["error_bound"] = notes.get("error_bound")
    d["rayleigh_quotient"] = notes.get("rayleigh_quotient")
    d["stopped"] = notes.get("stopped")  # shift_invert: why the iteration stopped
    if notes.get("rank_bound") is not None:
        d["rank_bound"] = notes["rank_bound"]  # rank K <= it: K singular by construction when below N

    def clean(v):
        if isinstance(v, float) and not np.isfinite(v):
            return None  # NaN: not computed; +-inf: that side of a certificate is open
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, np.generic):
            return clean(v.item())
        return v
    return clean(d)
