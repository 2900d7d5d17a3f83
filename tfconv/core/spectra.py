"""Extreme eigenvalues of a symmetric PSD Gram matrix without a dense decomposition (numpy/scipy only).

An empirical NTK ``K = J J^T`` has one huge outlier eigenvalue (about N times the mean entry) and a
dense bulk near zero, so plain Lanczos finds lambda_max in a handful of products but would need
thousands for lambda_min.  Here:

* lambda_max: Lanczos with full reorthogonalisation on ``v -> K v``, stopped when the Ritz residual
  estimate ``|beta_k s_k|`` is below ``tol * theta`` (method ``lanczos``);
* lambda_min: Lanczos on ``(K - sigma I)^-1`` through a Cholesky factor ``K - sigma I = L L^T``
  (``shift_invert``): lambda_min maps to the largest, well separated eigenvalue ``1/(lambda_min - sigma)``;
  sigma = 0 when K is numerically positive definite, else a small negative shift;
* a certificate that does not depend on either iteration: Cholesky of ``K - sigma I`` succeeds iff
  lambda_min > sigma (`cholesky_certificate`), so one success and one failure bracket lambda_min;
* up to ``dense_max`` rows, dense ``eigvalsh`` (values only) as before (method ``dense``).

The precision of K (`rounding_level`, `assess_lambda_min`): K's entries carry the rounding of the
arithmetic that computed them (the Gram precision, float64 or float32), so no eigenvalue of K is known
better than ``eps_K N max_i K_ii`` (a bound of order |dK|_2 <= N max|dK_ij|, |dK_ij| <= eps_K max diag K).
Every lambda_min is stored with ``rounding`` (that level), ``error`` (rounding + the solver's error: dense
eigvalsh eps_64 lambda_max, an iteration its measured residual |Kv - lambda v|) and a ``verdict``:
"resolved" when value > error (lambda_min is positive beyond doubt), else "below the precision of K".
The shift-invert iteration stops in absolute terms (`lambda_min_shift_invert`): when its error estimate
is below a tenth of the precision of K (rounding, at least eps_64 lambda_max), or as soon as its
estimate, an upper bound of lambda_min, is at or below the rounding level: a bottom that is a
rounding cluster is reported as such in a few solves.

Every value comes as an `EigenRecord`: value, method, iterations (products with K or solves with
L L^T that the iteration used), residual ``|K v - value v|_2`` of its unit Ritz vector (computed with
one extra product; for a symmetric K some eigenvalue lies within ``residual`` of ``value``).
`slq_density` gives the spectral density by stochastic Lanczos quadrature for the spectrum figure
above the dense size; `spectral_densities` puts the stored densities of several Grams on common
log-spaced bins (the aggregate's ``spectral_density_K0``).  The out-of-core products and
factorisations over a Zarr-stored K live in `tfconv.cluster.dask_spectra`; everything here takes
callables and small dense arrays.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

MatVec = Callable[[np.ndarray], np.ndarray]  # (n,) or (n, m) -> same shape
METHODS = ("dense", "lanczos", "shift_invert")

#: The verdicts of a stored lambda_min (`assess_lambda_min`).
RESOLVED = "resolved"
BELOW_PRECISION = "below the precision of K"
VERDICTS = (RESOLVED, BELOW_PRECISION)
#: The precisions a Gram can be computed in (config ``gram.precision``) and their machine epsilon.
PRECISIONS = {"float64": float(np.finfo(np.float64).eps), "float32": float(np.finfo(np.float32).eps)}
EPS64 = PRECISIONS["float64"]
#: The shift-invert iteration stops once its error estimate is below this fraction of the precision of K.
ATOL_FRACTION = 0.1
#: Solves the iteration makes at least before it calls a bottom "below the precision of K".
MIN_SOLVES = 3
#: Vectors per shift-invert solve (block Lanczos, `lanczos_largest`): a triangular solve with the
#: out-of-core factor reads the factor once whatever the number of right-hand sides, and the bottom of
#: an NTK's spectrum is a cluster that a single vector resolves slowly.
SHIFT_INVERT_BLOCK = 8


def precision_eps(precision: str) -> float:
    """Machine epsilon of a Gram precision ("float64" or "float32"); a clear error for anything else."""
    if precision not in PRECISIONS:
        raise ValueError(f"gram precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision]


def rounding_level(max_diag: float, n: int, precision: str) -> float:
    """``eps_K N max_i K_ii``: the level below which K's eigenvalues are rounding (K computed in
    ``precision``).  Each entry's error is at most about eps_K max|K_ij| <= eps_K max_i K_ii (K is PSD),
    and |dK|_2 <= N max|dK_ij|; by Weyl no eigenvalue of K is known better than that."""
    return float(precision_eps(precision) * int(n) * max(float(max_diag), 0.0))


def verdict_of(value: float, error: float) -> str:
    """"resolved" when the value exceeds its error (lambda_min > 0 beyond doubt), else "below the
    precision of K" (a NaN value or error is never resolved)."""
    return RESOLVED if (np.isfinite(value) and np.isfinite(error) and value > error) else BELOW_PRECISION


@dataclass
class EigenRecord:
    """One extreme eigenvalue with how it was obtained."""

    value: float
    method: str  # one of METHODS
    iterations: int  # products (lanczos), solves (shift_invert); dense: Lanczos steps for the residual
    residual: float  # |K v - value v|_2 for the unit vector v that goes with value
    shift: float = 0.0  # sigma of the factor K - sigma I (shift_invert)
    certificate: Optional[Tuple[float, float]] = None  # (lo, hi]: Cholesky success below, Rayleigh quotient above
    notes: Dict = field(default_factory=dict)
    rounding: float = float("nan")  # eps_K N max diag K (`rounding_level`)
    solver_error: float = float("nan")  # dense: eps_64 lambda_max; iterative: the residual
    error: float = float("nan")  # rounding + solver_error
    verdict: str = ""  # lambda_min: RESOLVED or BELOW_PRECISION (`assess_lambda_min`)

    def as_dict(self) -> Dict:
        d = asdict(self)
        d["certificate"] = list(self.certificate) if self.certificate is not None else None
        return d


@dataclass
class Certificate:
    """Bracket of lambda_min from Cholesky trials of K - sigma I: success -> lambda_min > sigma,
    failure -> lambda_min <= sigma (up to rounding of order eps * |K|); a Rayleigh quotient v^T K v of a
    unit vector is an upper bound too."""

    lo: float = -np.inf
    hi: float = np.inf
    trials: List[Dict] = field(default_factory=list)  # {"sigma", "ok", "column" (first failing), "seconds"}

    def add(self, sigma: float, ok: bool, column: Optional[int] = None, seconds: float = 0.0,
            kind: str = "cholesky") -> None:
        """A trial: ``kind`` "cholesky" (K - sigma I factors or not), "rayleigh_quotient" (sigma = v^T K v
        of a unit v, an upper bound of lambda_min: ``ok`` False) or "rank_bound" (rank K < N: the exact
        lambda_min is 0, so the computed K's is at most its rounding level sigma: ``ok`` False)."""
        self.trials.append({"sigma": float(sigma), "ok": bool(ok), "column": column, "seconds": float(seconds),
                            "kind": kind})
        if ok:
            self.lo = max(self.lo, float(sigma))
        else:
            self.hi = min(self.hi, float(sigma))

    @property
    def bracket(self) -> Tuple[float, float]:
        return (self.lo, self.hi)

    def contains(self, value: float, slack: float = 0.0) -> bool:
        return self.lo - slack < value <= self.hi + slack


# ----------------------------------------------------------------------------------------------
# Lanczos
# ----------------------------------------------------------------------------------------------


#: Called after every Lanczos step with (step, Ritz value, residual estimate) (`lanczos_largest`).
Progress = Callable[[int, float, float], None]


#: Asked after every Lanczos step with (step, Ritz value, residual estimate): True stops the iteration.
Stop = Callable[[int, float, float], bool]


def lanczos_largest(op: MatVec, n: int, tol: float = 1e-10, maxiter: int = 300, seed: int = 0,
                    v0: Optional[np.ndarray] = None,
                    progress: Optional[Progress] = None,
                    stop: Optional[Stop] = None, block: int = 1) -> Tuple[float, np.ndarray, int, float]:
    """Largest eigenvalue of a symmetric operator by (block) Lanczos with full reorthogonalisation.

    ``block`` > 1: block Lanczos, ``op`` applied to ``block`` vectors at once per step (an (n, block)
    array); the Ritz pair converges at a rate set by the gap to the (block + 1)-th eigenvalue instead of
    the second, at the price of one multi-vector product per step (for an out-of-core triangular solve,
    which reads its factor once per step, about the price of one vector).  Stops when the residual
    estimate of the top Ritz pair (``|beta_k s_k|``; block: ``|B_k s_k|``) is at most ``tol * |theta|``,
    when ``stop(k, theta, est)`` says so, or when the Krylov space is exhausted.  Returns (theta, unit
    Ritz vector, number of steps (products), residual estimate).  The basis is kept (n x k block floats;
    k is small for a gapped top).  ``progress(k, theta, est)`` is called after every step.
    """
    b = max(1, min(int(block), n))
    maxiter = int(max(1, min(maxiter, n // b)))
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((n, b)) if v0 is None else np.asarray(v0, dtype=np.float64).reshape(n, -1).copy()
    if V.shape[1] < b:
        V = np.hstack([V, rng.standard_normal((n, b - V.shape[1]))])
    Q = np.empty((n, (maxiter + 1) * b))
    Q[:, :b] = np.linalg.qr(V[:, :b])[0] if b > 1 else V[:, :1] / np.linalg.norm(V[:, 0])
    T = np.zeros(((maxiter + 1) * b, (maxiter + 1) * b))
    theta, s, est, k = 0.0, np.ones(b), np.inf, 0
    for k in range(1, maxiter + 1):
        q0, q1 = (k - 1) * b, k * b
        W = np.asarray(op(Q[:, q0:q1] if b > 1 else Q[:, q0]), dtype=np.float64).reshape(n, b)
        A = Q[:, q0:q1].T @ W
        T[q0:q1, q0:q1] = 0.5 * (A + A.T)
        W = W - Q[:, :q1] @ (Q[:, :q1].T @ W)  # full reorthogonalisation, twice ("twice is enough")
        W = W - Q[:, :q1] @ (Q[:, :q1].T @ W)
        if b > 1:
            Qn, B = np.linalg.qr(W)  # W = Qn B
        else:
            B = np.array([[np.linalg.norm(W[:, 0])]])
            Qn = W / B[0, 0] if B[0, 0] > 0 else W
        vals, vecs = np.linalg.eigh(T[:q1, :q1])
        theta, s = float(vals[-1]), vecs[:, -1]
        est = float(np.linalg.norm(B @ s[q0:q1]))
        if progress is not None:
            progress(k, theta, est)
        exhausted = float(np.min(np.abs(np.diag(B)))) <= 1e-14 * max(abs(theta), 1.0)
        if (est <= tol * max(abs(theta), np.finfo(float).tiny) or exhausted or k == maxiter
                or (stop is not None and stop(k, theta, est))):
            break
        Q[:, q1:q1 + b] = Qn
        T[q1:q1 + b, q0:q1] = B
        T[q0:q1, q1:q1 + b] = B.T
    v = Q[:, :k * b] @ s
    v /= np.linalg.norm(v)
    return theta, v, k, est


def _residual(matvec: MatVec, v: np.ndarray, value: float) -> Tuple[float, float]:
    """(|K v - value v|, v^T K v) of a unit vector v: one product."""
    Kv = np.asarray(matvec(v), dtype=np.float64).reshape(-1)
    return float(np.linalg.norm(Kv - value * v)), float(v @ Kv)


def lambda_max_lanczos(matvec: MatVec, n: int, tol: float = 1e-10, maxiter: int = 300, seed: int = 0,
                       progress: Optional[Progress] = None) -> EigenRecord:
    theta, v, its, est = lanczos_largest(matvec, n, tol=tol, maxiter=maxiter, seed=seed, progress=progress)
    res, rq = _residual(matvec, v, theta)
    return EigenRecord(theta, "lanczos", its, res, notes={"residual_estimate": est, "rayleigh_quotient": rq})


def lambda_min_shift_invert(solve: Callable[[np.ndarray], np.ndarray], matvec: MatVec, n: int, sigma: float,
                            tol: float = 1e-10, maxiter: int = 300, seed: int = 1,
                            progress: Optional[Progress] = None, atol: float = 0.0,
                            floor: Optional[float] = None, block: int = SHIFT_INVERT_BLOCK) -> EigenRecord:
    """lambda_min from the largest eigenvalue mu of (K - sigma I)^-1 (``solve`` applies it):
    lambda_min = sigma + 1/mu; the residual is measured with one product with K.

    Stops when the relative rule holds (``tol``, on the inverse), or in absolute terms on lambda:
    after `MIN_SOLVES` solves, as soon as the estimate sigma + 1/mu -- an upper bound of lambda_min,
    since a Ritz value never exceeds mu_max -- is at or below ``floor`` (the rounding level of K: notes
    ``stopped`` "below_precision"), or when the error estimate of lambda, est / mu^2 (est: the Ritz
    residual estimate on the inverse), is at most ``atol`` ("absolute_tolerance").  A bottom that is a
    cluster of rounding-level eigenvalues then costs a few solves instead of ``maxiter``.  Each solve
    takes ``block`` right-hand sides (block Lanczos; ``iterations`` counts solves)."""
    why: Dict[str, Optional[str]] = {"stopped": None}

    def stop(k: int, mu: float, est: float) -> bool:
        if not mu > 0 or k < MIN_SOLVES:  # a first Ritz pair's residual says little: a few solves first
            return False
        if floor is not None and sigma + 1.0 / mu <= floor:
            why["stopped"] = "below_precision"
        elif est / (mu * mu) <= atol:
            why["stopped"] = "absolute_tolerance"
        return why["stopped"] is not None

    mu, v, its, est = lanczos_largest(solve, n, tol=tol, maxiter=maxiter, seed=seed, progress=progress, stop=stop,
                                      block=block)
    if why["stopped"] is None:
        why["stopped"] = ("relative_tolerance" if est <= tol * abs(mu) else
                          "maxiter" if its >= min(int(maxiter), max(1, n // max(1, min(int(block), n)))) else "krylov_exhausted")
    lam = float(sigma + 1.0 / mu)
    res, rq = _residual(matvec, v, lam)
    return EigenRecord(lam, "shift_invert", its, res, shift=float(sigma),
                       notes={"residual_estimate_inverse": est, "error_estimate": float(est / (mu * mu)),
                              "rayleigh_quotient": rq, "stopped": why["stopped"], "block": int(block)})


def assess_lambda_min(rec: EigenRecord, rounding: float, lambda_max: float) -> EigenRecord:
    """Give a lambda_min record its error and verdict (in place; returns it): ``rounding`` (the
    precision of K, `rounding_level`), ``solver_error`` (dense eigvalsh: eps_64 lambda_max, the LAPACK
    guide's error bound of a backward-stable symmetric eigensolver; an iteration: its measured
    residual |K v - lambda v|, within which some eigenvalue lies), ``error`` = their sum, and
    ``verdict`` (`verdict_of`)."""
    if rec.method == "dense":
        solver = EPS64 * abs(float(lambda_max))
    else:
        solver = float(rec.residual) if np.isfinite(rec.residual) else np.inf
    rec.rounding = float(rounding)
    rec.solver_error = float(solver)
    rec.error = float(rounding + solver)
    rec.verdict = verdict_of(rec.value, rec.error)
    return rec


def solver_tolerance(rounding: float, lambda_max: float) -> float:
    """The absolute tolerance of lambda_min's iteration: `ATOL_FRACTION` of the precision of K (its
    rounding level, and at least eps_64 lambda_max: the arithmetic of the solves)."""
    return ATOL_FRACTION * max(float(rounding), EPS64 * abs(float(lambda_max)))


# ----------------------------------------------------------------------------------------------
# Cholesky: factor, solve, certificate (dense versions; the Zarr ones follow the same interface)
# ----------------------------------------------------------------------------------------------


def dense_cholesky(K: np.ndarray, sigma: float = 0.0) -> Tuple[Optional[np.ndarray], Optional[int]]:
    """(L, None) with L L^T = K - sigma I, or (None, first failing column, 0-based) when K - sigma I
    is not numerically positive definite (LAPACK dpotrf)."""
    from scipy.linalg.lapack import dpotrf

    A = np.array(K, dtype=np.float64, order="F", copy=True)
    if sigma:
        A[np.diag_indices_from(A)] -= sigma
    c, info = dpotrf(A, lower=1, clean=1, overwrite_a=1)
    if info > 0:
        return None, int(info) - 1
    if info < 0:
        raise ValueError(f"dpotrf: illegal argument {-info}")
    return c, None


def cho_solver(L: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    from scipy.linalg import cho_solve

    return lambda b: cho_solve((L, True), b)


def cholesky_certificate(K_or_chol: Union[np.ndarray, Callable[[float], Tuple[bool, Optional[int]]]],
                         sigmas: Union[float, Sequence[float]], cert: Optional[Certificate] = None) -> Certificate:
    """Bracket lambda_min by Cholesky trials of ``K - sigma I`` for each sigma (success: lambda_min >
    sigma; failure: lambda_min <= sigma).  ``K_or_chol`` is a dense K or a callable sigma -> (ok,
    failing column).  Returns the `Certificate` ([lo, hi], every trial)."""
    cert = cert or Certificate()
    if isinstance(K_or_chol, np.ndarray):
        K = K_or_chol

        def chol(sig):
            L, col = dense_cholesky(K, sig)
            return L is not None, col
    else:
        chol = K_or_chol
    for sig in np.atleast_1d(np.asarray(sigmas, dtype=np.float64)):
        t0 = time.perf_counter()
        ok, col = chol(float(sig))
        cert.add(float(sig), ok, col, time.perf_counter() - t0)
    return cert


# ----------------------------------------------------------------------------------------------
# The driver: dense below dense_max, iterative above
# ----------------------------------------------------------------------------------------------


def initial_shifts(lam_max: float, rel: float = 1e-9, tries: int = 6) -> List[float]:
    """Shifts tried for the factor when K itself is not numerically positive definite (singular
    K, rounding): -rel * lambda_max, growing tenfold."""
    return [-rel * lam_max * 10.0 ** t for t in range(tries)]


def dense_extremes(S: np.ndarray, residuals: bool = True, precision: str = "float64") -> Dict[str, EigenRecord]:
    """Dense ``eigvalsh`` (values only; the full spectrum in lambda_min's ``notes["eigenvalues"]``),
    lambda_min assessed against the precision of K (`assess_lambda_min`; K computed in ``precision``).

    Residuals, when asked: eigvalsh gives no vectors, so a vector for each extreme value comes from
    a few Lanczos steps (top: on K; bottom: on (K - sigma I)^-1 with sigma just below the value, one
    dense Cholesky, about a tenth of eigvalsh's time); ``iterations`` counts those steps.
    """
    n = S.shape[0]
    ev = np.linalg.eigvalsh(S)
    bound = float(n * np.finfo(float).eps * max(abs(ev[-1]), abs(ev[0])))
    rmin = EigenRecord(float(ev[0]), "dense", 0, np.nan, notes={"eigenvalues": ev, "error_bound": bound})
    rmax = EigenRecord(float(ev[-1]), "dense", 0, np.nan, notes={"error_bound": bound})
    rounding = rounding_level(float(np.max(np.diag(S))) if n else 0.0, n, precision)
    assess_lambda_min(rmin, rounding, rmax.value)
    assess_lambda_min(rmax, rounding, rmax.value).verdict = ""
    if not residuals:
        return {"lambda_min": rmin, "lambda_max": rmax}
    _, v, its, _ = lanczos_largest(S.__matmul__, n, tol=1e-12, maxiter=60)
    rmax.residual, rmax.iterations = float(np.linalg.norm(S @ v - rmax.value * v)), its
    scale = max(abs(ev[-1]), np.finfo(float).tiny)
    for rel in (1e-9, 1e-7, 1e-5, 1e-3):
        sigma = rmin.value - rel * scale
        L, _ = dense_cholesky(S, sigma)
        if L is not None:
            _, v, its, _ = lanczos_largest(cho_solver(L), n, tol=1e-12, maxiter=60, seed=1)
            rmin.residual, rmin.iterations = float(np.linalg.norm(S @ v - rmin.value * v)), its
            break
    return {"lambda_min": rmin, "lambda_max": rmax}


#: chol(sigma) -> (solve, None) with solve(b) = (K - sigma I)^-1 b, or (None, first failing column).
Factor = Callable[[float], Tuple[Optional[Callable[[np.ndarray], np.ndarray]], Optional[int]]]
#: trial(sigma) -> (ok, first failing column): a Cholesky trial of K - sigma I whose factor is not kept.
Trial = Callable[[float], Tuple[bool, Optional[int]]]


def certified_lambda_min(matvec: MatVec, n: int, chol: Factor, lambda_max: float, rounding: float,
                         tol: float = 1e-10, maxiter: int = 300, certificate_rtol: float = 0.0,
                         trial: Optional[Trial] = None, log: Callable[[str], None] = lambda s: None,
                         progress: Optional[Progress] = None,
                         release: Optional[Callable[[], None]] = None,
                         rank_bound: Optional[int] = None) -> Tuple[EigenRecord, Dict[str, float]]:
    """lambda_min of a symmetric PSD K by shift-invert Lanczos, with its error, verdict and certificate;
    returns (record, seconds per phase: cholesky, shift_invert, certificate).

    1. **Cholesky** of K - sigma I, sigma = 0 first (success: lambda_min > 0), then the negative shifts of
       `initial_shifts` until one factors (K numerically indefinite: its bottom is rounding).  With
       ``rank_bound`` < n (K = F F^T with fewer columns than rows: singular by construction) sigma = 0
       is not tried: whether it factors would only say which way the rounding went.
    2. **shift-invert** Lanczos with that factor (`lambda_min_shift_invert`), stopped in absolute terms:
       error estimate <= `solver_tolerance` (a tenth of the precision of K), or an estimate at or below
       ``rounding`` (a rounding-level bottom: "below the precision of K" in a few solves); then
       `assess_lambda_min`.  ``release()`` is called once the factor is no longer needed.
    3. **certificate**: the bracket (lo, hi] of lambda_min, independent of the iteration's convergence:
       lo from the Cholesky successes (sigma = 0 or the shift; with ``certificate_rtol`` > 0 and a
       resolved value also sigma = value (1 - rtol), by ``trial`` (default: ``chol``)), hi from the
       failures, the rounding level of K when ``rank_bound`` < n (exact lambda_min 0),
       and the Rayleigh quotient v^T K v of the returned unit vector plus the rounding level of K
       (lambda_min <= v^T K v for any unit v, exactly; computed, up to the precision of K).  A value below the precision of K gets no extra factorisation.
    """
    secs: Dict[str, float] = {}
    cert = Certificate()
    solve, sigma = None, 0.0
    t0 = time.perf_counter()
    singular = rank_bound is not None and int(rank_bound) < n
    if singular:
        log(f"[spectra] rank K <= {int(rank_bound)} < N = {n}: K is singular by construction; its Cholesky "
            "starts at the first negative shift")
    for sig in ([] if singular else [0.0]) + initial_shifts(lambda_max):
        ts = time.perf_counter()
        solve, col = chol(sig)
        cert.add(sig, solve is not None, col, time.perf_counter() - ts)
        log(f"[spectra] Cholesky of K - ({sig:.3g}) I " + ("done" if solve is not None else f"failed at column {col}")
            + f" in {time.perf_counter() - ts:.0f}s")
        if solve is not None:
            sigma = sig
            break
    secs["cholesky"] = time.perf_counter() - t0
    if solve is None:
        if release is not None:
            release()
        raise np.linalg.LinAlgError(f"K - sigma I is not positive definite for any sigma in "
                                    f"{[t['sigma'] for t in cert.trials]}; K is not positive semi-definite")
    t0 = time.perf_counter()
    rmin = lambda_min_shift_invert(solve, matvec, n, sigma, tol=tol, maxiter=maxiter, progress=progress,
                                   atol=solver_tolerance(rounding, lambda_max), floor=rounding)
    secs["shift_invert"] = time.perf_counter() - t0
    if release is not None:
        release()
    assess_lambda_min(rmin, rounding, lambda_max)
    log(f"[spectra] lambda_min {rmin.value:.6g} by shift-invert (sigma {sigma:.3g}): {rmin.iterations} solves "
        f"(stopped: {rmin.notes['stopped']}), residual {rmin.residual:.3g}, error {rmin.error:.3g} "
        f"(rounding of K {rounding:.3g}): {rmin.verdict}, {secs['shift_invert']:.0f}s")
    # v^T K v >= lambda_min for a unit v, up to the rounding of K and of the product: widened by the precision of K
    cert.add(rmin.notes["rayleigh_quotient"] + rounding, False, None, 0.0, kind="rayleigh_quotient")
    if singular:  # exactly singular: lambda_min of the computed K is within its rounding of 0 (Weyl)
        cert.add(rounding, False, None, 0.0, kind="rank_bound")
    if certificate_rtol > 0 and rmin.verdict == RESOLVED and rmin.value * (1 - certificate_rtol) > cert.lo:
        t0 = time.perf_counter()

        def chol_trial(sig):
            f, col = chol(sig)
            return f is not None, col
        cholesky_certificate(trial or chol_trial, [rmin.value * (1 - certificate_rtol)], cert)
        secs["certificate"] = time.perf_counter() - t0
    rmin.certificate = cert.bracket
    rmin.notes["certificate_trials"] = cert.trials
    if rank_bound is not None:
        rmin.notes["rank_bound"] = int(rank_bound)
    log(f"[spectra] certificate: lambda_min in ({cert.lo:.6g}, {cert.hi:.6g}]")
    return rmin, secs


def extreme_eigenvalues(
    K: Union[np.ndarray, Callable[[np.ndarray], np.ndarray]],
    n: Optional[int] = None,
    dense_max: int = 4096,
    chol: Optional[Factor] = None,
    tol: float = 1e-10,
    maxiter: int = 300,
    certificate_rtol: float = 0.0,
    log: Callable[[str], None] = lambda s: None,
    precision: str = "float64",
    max_diag: Optional[float] = None,
) -> Dict[str, EigenRecord]:
    """{"lambda_min": EigenRecord, "lambda_max": EigenRecord} of a symmetric PSD matrix computed in
    ``precision`` (its rounding level sets lambda_min's error, verdict and stopping rule).

    ``K``: a dense array, or a matvec callable (then ``n``, ``chol`` and ``max_diag`` are needed:
    ``chol(sigma)`` returns (solve, None) with solve(b) = (K - sigma I)^-1 b, or (None, failing
    column)).  n <= dense_max and a dense K: ``np.linalg.eigvalsh`` (values only), and the full
    spectrum in ``notes["eigenvalues"]`` of lambda_min's record.  Otherwise lambda_max by Lanczos and
    lambda_min by `certified_lambda_min`.
    """
    if isinstance(K, np.ndarray):
        A = np.asarray(K, dtype=np.float64)
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"K must be square, got shape {A.shape}")
        n = A.shape[0]
        S = 0.5 * (A + A.T)
        if n <= dense_max:
            return dense_extremes(S, precision=precision)
        matvec = S.__matmul__
        max_diag = float(np.max(np.diag(S)))

        def chol(sig):
            L, col = dense_cholesky(S, sig)
            return (cho_solver(L) if L is not None else None), col
    else:
        if n is None or chol is None or max_diag is None:
            raise ValueError("a matvec K needs n, chol and max_diag")
        matvec = K
    rmax = lambda_max_lanczos(matvec, n, tol=tol, maxiter=maxiter)
    log(f"[spectra] lambda_max {rmax.value:.6g} by Lanczos, {rmax.iterations} products, residual {rmax.residual:.3g}")
    rounding = rounding_level(max_diag, n, precision)
    assess_lambda_min(rmax, rounding, rmax.value).verdict = ""
    rmin, _ = certified_lambda_min(matvec, n, chol, rmax.value, rounding, tol=tol, maxiter=maxiter,
                                   certificate_rtol=certificate_rtol, log=log)
    return {"lambda_min": rmin, "lambda_max": rmax}


# ----------------------------------------------------------------------------------------------
# Stochastic Lanczos quadrature
# ----------------------------------------------------------------------------------------------


def slq_density(matvec: MatVec, n: int, n_vectors: int = 8, steps: int = 30, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Spectral density of K by stochastic Lanczos quadrature: (nodes, weights), weights summing to 1.

    ``n_vectors`` Rademacher start vectors run together (``matvec`` takes an (n, m) block, so a
    streamed K is read once per step for all of them), ``steps`` Lanczos steps each with full
    reorthogonalisation; each vector's Gauss quadrature (Ritz values, squared first components of
    the eigenvectors of T) is averaged.  Integrals of smooth f against the density approximate
    tr f(K) / n.
    """
    rng = np.random.default_rng(seed)
    m, steps = int(n_vectors), int(min(steps, n))
    V = rng.choice([-1.0, 1.0], size=(n, m)) / np.sqrt(n)
    Q = np.empty((steps, n, m))
    Q[0] = V
    alphas = np.zeros((steps, m))
    betas = np.zeros((steps, m))
    live = np.ones(m, dtype=bool)
    length = np.full(m, steps)
    for k in range(steps):
        W = np.asarray(matvec(Q[k]), dtype=np.float64).reshape(n, m)
        alphas[k] = np.einsum("ij,ij->j", Q[k], W)
        for _ in range(2):  # full reorthogonalisation per vector
            coef = np.einsum("kij,ij->kj", Q[:k + 1], W)
            W = W - np.einsum("kij,kj->ij", Q[:k + 1], coef)
        b = np.linalg.norm(W, axis=0)
        done = live & (b <= 1e-12 * np.maximum(np.abs(alphas[k]), 1e-300))
        length[done] = k + 1
        live &= ~done
        if k + 1 < steps:
            betas[k] = b
            Q[k + 1] = np.where(live, W / np.where(b > 0, b, 1.0), 0.0)
    nodes, weights = [], []
    for j in range(m):
        L = int(length[j])
        T = np.diag(alphas[:L, j]) + np.diag(betas[:L - 1, j], 1) + np.diag(betas[:L - 1, j], -1)
        th, S = np.linalg.eigh(T)
        nodes.append(th)
        weights.append(S[0] ** 2 / m)
    nodes_a, weights_a = np.concatenate(nodes), np.concatenate(weights)
    order = np.argsort(nodes_a)
    return nodes_a[order], weights_a[order] / weights_a.sum()


def density_histogram(nodes: np.ndarray, weights: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Fraction of eigenvalues per bin of ``edges`` (SLQ nodes/weights, or eigenvalues with equal weights)."""
    h, _ = np.histogram(np.clip(nodes, edges[0], edges[-1]), bins=edges, weights=weights)
    return h / max(float(np.sum(weights)), 1e-300)


# ----------------------------------------------------------------------------------------------
# Spectral densities of several Grams on common bins (the aggregate's spectral_density_K0)
# ----------------------------------------------------------------------------------------------

#: Bins of the spectral density of K_0 (log-spaced over [min lambda_min, max lambda_max] of the experiment).
DENSITY_BINS = 30


def density_source(sp: Mapping) -> Optional[Tuple[str, np.ndarray, np.ndarray]]:
    """(method, nodes, weights) of the spectral density a published Gram stored (``sp`` as
    `tfconv.store.read_spectrum` gives it): its eigenvalues with equal weights (dense), its SLQ nodes
    and weights (iterative, when asked), else None."""
    if sp.get("eigenvalues") is not None:
        ev = np.asarray(sp["eigenvalues"], dtype=float)
        return "dense", ev, np.full(ev.shape, 1.0 / max(ev.size, 1))
    if sp.get("slq") is not None:
        nodes, weights = sp["slq"]
        return "slq", np.asarray(nodes, dtype=float), np.asarray(weights, dtype=float)
    return None


def density_edges(spectra: Mapping[str, Mapping], bins: int = DENSITY_BINS) -> Optional[np.ndarray]:
    """Log-spaced bin edges over [min lambda_min, max lambda_max] of the Grams with a density (a
    lambda_min <= 0, a singular K_0, is replaced by the smallest positive eigenvalue or node, at
    least 1e-12 lambda_max: what lies below falls in the first bin)."""
    src = [(sp, density_source(sp)) for sp in spectra.values()]
    src = [(sp, d) for sp, d in src if d is not None]
    if not src:
        return None
    hi = max(float(sp["lambda_max"]) for sp, _ in src)
    pos = [float(sp["lambda_min"]) if float(sp["lambda_min"]) > 0 else
           float(np.min(d[1][d[1] > 0], initial=np.inf)) for sp, d in src]
    lo = max(min(pos), 1e-12 * hi)
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > 0):
        return None
    if hi <= lo:
        lo, hi = lo / 1.01, hi * 1.01
    return np.geomspace(lo, hi, bins + 1)


@dataclass(frozen=True)
class SpectralDensities:
    """Spectral densities of several Grams on common bins: ``edges`` (bins + 1, log-spaced) and per
    key (a run id) the fraction of the eigenvalues per bin and the method it came from ("dense":
    the stored eigenvalues, "slq": the stored quadrature nodes and weights)."""

    edges: np.ndarray
    values: Dict[str, np.ndarray]
    methods: Dict[str, str]


def spectral_densities(spectra: Mapping[str, Mapping], bins: int = DENSITY_BINS) -> Optional[SpectralDensities]:
    """The spectral density of every Gram in ``spectra`` (key -> `tfconv.store.read_spectrum`) that
    stored eigenvalues or an SLQ density, on common log-spaced bins (`density_edges`,
    `density_histogram`); None when none did."""
    edges = density_edges(spectra, bins)
    if edges is None:
        return None
    values, methods = {}, {}
    for key, sp in spectra.items():
        src = density_source(sp)
        if src is not None:
            methods[key] = src[0]
            values[key] = density_histogram(src[1], src[2], edges)
    return SpectralDensities(edges, values, methods)
