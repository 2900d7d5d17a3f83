"""Extreme eigenvalues without a dense decomposition (tfconv.core.spectra, tfconv.cluster.dask_spectra).

Kernels here are NTK-like: PSD with one huge outlier eigenvalue (a constant c 11^T on top of J J^T,
as a mean-output NTK has), or the real empirical NTK of a small model.  The Dask tests run a real
LocalCluster over real Zarr Gram stores written block by block as the workflow writes them.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tfconv import store
from tfconv.cluster import dask_spectra as DS
from tfconv.core import spectra as S
from tfconv.core.model import ModelSpec, init_params
from tfconv.core.ntk import gram_statistics, ntk_matrix
from tfconv.data import make_synthetic

EPS = np.finfo(float).eps


def ntk_like(n: int, p: int, c: float = 1.0, seed: int = 0) -> np.ndarray:
    """J J^T / p + c 11^T with J n x p Gaussian: for p > n positive definite, Marchenko-Pastur bulk
    in [(1 - sqrt(n/p))^2, (1 + sqrt(n/p))^2] and one outlier near c n."""
    J = np.random.default_rng(seed).standard_normal((n, p))
    return J @ J.T / p + c


def write_gram(gram_store, rid: str, K: np.ndarray, block: int, precision: str = "float64", **attrs):
    n = K.shape[0]
    g = store.ensure_gram(gram_store, rid, 0, n, block, attrs={"run_id": rid, "epoch": 0, "precision": precision,
                                                               **attrs})
    ranges = store.block_ranges(n, block)
    for bi, bj in store.upper_blocks(n, block):
        (r0, r1), (c0, c1) = ranges[bi], ranges[bj]
        store.write_block(g, bi, bj, K[r0:r1, c0:c1], block)
    return g


# ------------------------------------------------------------------------------------------------
# numpy / scipy only
# ------------------------------------------------------------------------------------------------


def test_iterative_agrees_with_dense_at_4000():
    # Tolerances.  Dense eigvalsh is backward stable: its values are exact for a matrix within
    # ~ n eps |K|_2 of K, so it is itself only accurate to n eps lambda_max = 4000 * 2.2e-16 * ~4000
    # ~ 3.6e-9 absolute, which is 1e-7 of lambda_min ~ 0.034 here.  The iterative values stop at a
    # residual estimate of 1e-10 of the value; for a symmetric K an eigenvalue lies within the
    # (measured) residual of each Ritz value, and a Ritz value never lies outside [lambda_min,
    # lambda_max].  So: |iterative - dense| <= residual + n eps lambda_max, for both ends.
    n = 4000
    K = ntk_like(n, 6000)
    dense = S.extreme_eigenvalues(K, dense_max=n)
    it = S.extreme_eigenvalues(K, dense_max=n - 1)
    assert dense["lambda_min"].method == dense["lambda_max"].method == "dense"
    assert (it["lambda_max"].method, it["lambda_min"].method) == ("lanczos", "shift_invert")
    lam_max = dense["lambda_max"].value
    assert lam_max > 1e4 * dense["lambda_min"].value  # the NTK-like outlier is there
    bound = n * EPS * lam_max
    for k in ("lambda_min", "lambda_max"):
        d, r = dense[k], it[k]
        assert abs(r.value - d.value) <= r.residual + bound, (k, r.value, d.value, r.residual, bound)
        assert r.residual <= 1e-8 * max(r.value, 1.0), (k, r.residual)
        assert d.residual <= 1e-8 * lam_max, (k, d.residual)  # dense values come with residuals too
        assert 1 <= r.iterations <= 300
    assert abs(it["lambda_min"].value - dense["lambda_min"].value) <= 1e-7 * dense["lambda_min"].value
    assert it["lambda_max"].iterations <= 12  # the outlier converges in a handful of products
    # K was PD: the factor used sigma = 0, which certifies lambda_min > 0
    assert it["lambda_min"].shift == 0.0 and it["lambda_min"].certificate[0] == 0.0


def test_cholesky_certificate_brackets_lambda_min_and_rejects_a_wrong_value():
    K = ntk_like(800, 1600, seed=1)
    lam = np.linalg.eigvalsh(K)[0]
    cert = S.cholesky_certificate(K, [lam * (1 - 1e-6), lam * (1 + 1e-6)])
    assert [t["ok"] for t in cert.trials] == [True, False]
    assert cert.lo < lam <= cert.hi and cert.contains(lam)
    assert cert.trials[1]["column"] is not None and 0 <= cert.trials[1]["column"] < 800
    # a wrong estimate (too high by 1%, or too low) falls outside the bracket
    assert not cert.contains(lam * 1.01) and not cert.contains(lam * 0.99)
    # the certificate of the iterative path brackets the value it certifies: a Cholesky success at
    # value (1 - rtol) below it, the Rayleigh quotient of its unit vector (lambda_min <= v^T K v) above
    it = S.extreme_eigenvalues(K, dense_max=10, certificate_rtol=1e-3)
    rec = it["lambda_min"]
    lo, hi = rec.certificate
    assert lo == pytest.approx(rec.value * (1 - 1e-3)) and hi == rec.notes["rayleigh_quotient"] + rec.rounding
    assert lo < lam <= hi and lo < rec.value <= hi + rec.error  # v^T K v >= sigma + 1/mu, up to rounding
    assert [t["kind"] for t in rec.notes["certificate_trials"]] == ["cholesky", "rayleigh_quotient", "cholesky"]
    assert hi - lam <= rec.residual  # the vector is converged: its Rayleigh quotient is a tight upper bound
    # sigma above lambda_min always fails, below always succeeds
    assert not S.cholesky_certificate(K, [2 * lam]).trials[0]["ok"]
    assert S.cholesky_certificate(K, [0.5 * lam]).trials[0]["ok"]


def test_singular_kernel_gets_a_negative_shift_and_a_bracket_around_zero():
    # rank 101 < n: lambda_min = 0 up to rounding; Cholesky of K fails, K + s I succeeds
    J = np.random.default_rng(2).standard_normal((600, 100))
    K = J @ J.T / 100 + 0.5
    it = S.extreme_eigenvalues(K, dense_max=10)
    rec = it["lambda_min"]
    trials = rec.notes["certificate_trials"]
    assert trials[0]["sigma"] == 0.0 and not trials[0]["ok"]
    assert rec.shift < 0 and rec.certificate[0] == rec.shift and rec.certificate[1] <= 0.0
    assert abs(rec.value) <= 1e-9 * it["lambda_max"].value
    # its bottom is rounding: reported as such in a few solves, with an error above the value
    assert rec.verdict == S.BELOW_PRECISION and rec.notes["stopped"] == "below_precision"
    assert rec.iterations <= 5 and rec.error >= rec.rounding > abs(rec.value)


def test_a_rank_bound_below_n_skips_the_unshifted_cholesky():
    """rank K <= G < n (K = F F^T, `ntk_structured.rank_bound`): singular by construction, so the Cholesky
    starts at the first negative shift (no factorisation spent on sigma = 0) and lambda_min's value,
    verdict and bracket are those found with the sigma = 0 attempt; with G >= n sigma = 0 is tried
    first, and a full-rank K still factors at sigma = 0."""
    J = np.random.default_rng(2).standard_normal((600, 100))
    K = J @ J.T / 100
    rmax = S.lambda_max_lanczos(K.__matmul__, 600)
    rounding = S.rounding_level(float(np.max(np.diag(K))), 600, "float64")

    def run(M, bound):
        calls = []

        def chol(sig):
            calls.append(sig)
            L, col = S.dense_cholesky(M, sig)
            return (S.cho_solver(L) if L is not None else None), col
        rec, _ = S.certified_lambda_min(M.__matmul__, 600, chol, rmax.value, rounding, rank_bound=bound)
        return rec, calls

    plain, calls_plain = run(K, None)
    skipped, calls_skipped = run(K, 100)
    assert calls_plain[0] == 0.0 and 0.0 not in calls_skipped and len(calls_skipped) == len(calls_plain) - 1
    assert calls_skipped[0] == S.initial_shifts(rmax.value)[0]
    assert skipped.verdict == plain.verdict == S.BELOW_PRECISION and skipped.value == plain.value
    assert skipped.certificate[0] == plain.certificate[0] < 0 and skipped.notes["rank_bound"] == 100
    # exactly singular: the computed K's lambda_min is within its rounding of 0, so hi = the rounding level
    assert skipped.certificate[1] == rounding and skipped.certificate[0] < skipped.value <= rounding
    assert skipped.notes["certificate_trials"][-1]["kind"] == "rank_bound"
    full = K + 0.5 * np.eye(600)  # a bound of n or more changes nothing
    rec, calls = run(full, 600)
    assert calls[0] == 0.0 and rec.certificate[0] == 0.0 and rec.verdict == S.RESOLVED


def test_slq_density_matches_the_spectrum():
    K = ntk_like(1000, 3000, c=0.0, seed=3)  # no outlier: a bulk the density can resolve
    ev = np.linalg.eigvalsh(K)
    nodes, w = S.slq_density(K.__matmul__, 1000, n_vectors=16, steps=40, seed=0)
    assert w.sum() == pytest.approx(1.0) and np.all(w >= 0)
    assert ev[0] - 1e-8 <= nodes.min() and nodes.max() <= ev[-1] + 1e-8
    # mean = tr K / n (Hutchinson: std ~ sqrt(2/(16 n)) |K|_F / n^.5 ~ 1e-2 here)
    assert abs((w * nodes).sum() - ev.mean()) <= 0.03 * ev.mean()
    edges = np.linspace(ev[0], ev[-1], 6)
    hist_true = S.density_histogram(ev, np.ones_like(ev), edges)
    assert np.abs(np.cumsum(S.density_histogram(nodes, w, edges)) - np.cumsum(hist_true)).max() <= 0.08



def test_spectral_densities_on_common_log_bins():
    """The aggregate's spectral_density_K0 is computed here (the store only places it on the grid):
    one set of log-spaced edges over every Gram with a density, a histogram per Gram from its
    eigenvalues (dense) or SLQ nodes (slq), none for a Gram that stored neither."""
    K = ntk_like(200, 400, seed=9)
    ev = np.linalg.eigvalsh(K)
    nodes, w = S.slq_density(K.__matmul__, 200, n_vectors=4, steps=20, seed=0)
    spectra = {"a": {"lambda_min": ev[0], "lambda_max": ev[-1], "eigenvalues": ev, "slq": None},
               "b": {"lambda_min": ev[0], "lambda_max": 2 * ev[-1], "eigenvalues": None, "slq": (nodes, w)},
               "c": {"lambda_min": ev[0], "lambda_max": 3 * ev[-1], "eigenvalues": None, "slq": None}}
    d = S.spectral_densities(spectra, bins=12)
    assert d.edges.size == 13 and d.edges[0] == pytest.approx(ev[0]) and d.edges[-1] == pytest.approx(2 * ev[-1])
    np.testing.assert_allclose(np.diff(np.log(d.edges)), np.log(d.edges[1] / d.edges[0]), rtol=1e-12)
    assert d.methods == {"a": "dense", "b": "slq"} and sorted(d.values) == ["a", "b"]
    np.testing.assert_array_equal(d.values["a"], S.density_histogram(ev, np.full(200, 1 / 200), d.edges))
    assert all(v.sum() == pytest.approx(1.0) for v in d.values.values())
    assert S.spectral_densities({"c": spectra["c"]}) is None and S.spectral_densities({}) is None


# ------------------------------------------------------------------------------------------------
# Dask over Zarr
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as c:
        yield c


def test_zarr_matvec_and_cholesky_equal_numpy(client, tmp_path):
    n, block = 1530, 100  # ragged last block and tile
    K = ntk_like(n, 3000, seed=4)
    g = write_gram(tmp_path / "g.zarr", "r", K, block)
    k_path = str(store.gram_path(tmp_path / "g.zarr", "r", 0) / "K")
    V = np.random.default_rng(5).standard_normal((n, 3))
    scale = np.abs(K).sum(axis=1).max()
    for panel_bytes in (128 << 20, 8 * 100 * 300):  # one panel per block row; narrow slabs
        np.testing.assert_allclose(DS.zarr_matvec(client, k_path, V, panel_bytes), K @ V, rtol=0, atol=1e-13 * scale * 3)
    np.testing.assert_allclose(DS.zarr_matvec(client, k_path, V[:, 0]), K @ V[:, 0], rtol=0, atol=1e-13 * scale * 3)
    fac, col = DS.zarr_cholesky(client, k_path, str(tmp_path / "L"), 0.0, tile=400)
    assert col is None and fac.T == 400
    L = np.linalg.cholesky(K)
    np.testing.assert_allclose(fac.dense(), L, rtol=0, atol=1e-12 * np.abs(L).max())
    x = fac.solve(V)
    np.testing.assert_allclose(K @ x, V, rtol=0, atol=1e-8 * np.abs(V).max())
    # K - sigma I above lambda_min: the factorisation fails and names a column
    lam = np.linalg.eigvalsh(K)[0]
    fac2, col2 = DS.zarr_cholesky(client, k_path, str(tmp_path / "L2"), 1.001 * lam, tile=400)
    assert fac2 is None and 0 <= col2 < n
    op = DS.ZarrGramOperator(client, k_path)
    np.testing.assert_allclose(op.op @ V[:, 1], K @ V[:, 1], rtol=0, atol=1e-12 * scale)
    assert op.products == 1
    assert g.attrs["complete"] is False  # nothing here published the Gram


def test_workflow_finalisation_stores_iterative_extremes(client, tmp_path):
    gs = tmp_path / "gram.zarr"
    n = 1200
    K = ntk_like(n, 2400, seed=6)
    g = write_gram(gs, "big", K, 128)
    ev = DS.finalize_gram(g, {"who": "test"}, client=client,
                          settings=DS.SpectrumSettings(dense_max=1000, tile=384, certificate_rtol=1e-3, slq_vectors=4,
                                                       slq_steps=10))
    assert store.gram_complete(gs, "big", 0)
    sp = store.read_spectrum(gs, "big", 0)
    dense = np.linalg.eigvalsh(K)
    assert sp["eigenvalues"] is None and list(ev) == [sp["lambda_min"], sp["lambda_max"]]
    rec = sp["records"]
    assert rec["computed"] == "iterative" and rec["dense_max"] == 1000
    assert (rec["lambda_min"]["method"], rec["lambda_max"]["method"]) == ("shift_invert", "lanczos")
    for k, true in (("lambda_min", dense[0]), ("lambda_max", dense[-1])):
        r = rec[k]
        assert r["iterations"] >= 1 and r["residual"] is not None
        assert abs(r["value"] - true) <= r["residual"] + n * EPS * dense[-1], (k, r, true)
    lo, hi = rec["lambda_min"]["certificate"]
    err = rec["lambda_min"]["error"]  # the bracket holds up to rounding (eigvalsh's too: 2.7e-13 here)
    assert lo < dense[0] <= hi + err and lo < sp["lambda_min"] <= hi + err and hi - lo < 2e-3 * dense[0]
    assert rec["lambda_min"]["verdict"] == S.RESOLVED and dense[0] > err
    nodes, w = sp["slq"]
    assert w.sum() == pytest.approx(1.0) and nodes.max() <= dense[-1] * (1 + 1e-9)
    assert not (store.gram_path(gs, "big", 0) / DS.FACTOR).exists()  # the factor is scratch
    # readers: the statistics without K whole equal the dense ones; read_gram refuses clearly
    st = store.gram_statistics_stored(gs, "big", 0, ref_epoch=0, panel_bytes=8 * n * 100)
    ref = gram_statistics(K, np.asarray(ev), K)
    assert st["kernel_trace"] == pytest.approx(ref["kernel_trace"], rel=1e-14) and st["kernel_change"] == 0.0
    assert (st["lambda_min"], st["lambda_max"]) == (ref["lambda_min"], ref["lambda_max"])
    with pytest.raises(store.StoreError, match="only its extreme eigenvalues"):
        store.read_gram(gs, "big", 0)
    # below dense_max the same call stores every eigenvalue, with residuals of the extremes
    g2 = write_gram(gs, "small", K[:300, :300], 128)
    ev2 = DS.finalize_gram(g2, None, client=None, settings=DS.SpectrumSettings(dense_max=1000))
    K2, ev2r = store.read_gram(gs, "small", 0)
    np.testing.assert_array_equal(ev2, ev2r)
    np.testing.assert_array_equal(ev2, np.linalg.eigvalsh(K[:300, :300]))
    r2 = store.read_spectrum(gs, "small", 0)["records"]
    assert r2["computed"] == "dense" and r2["lambda_min"]["method"] == "dense" and r2["lambda_min"]["residual"] < 1e-9
    # above dense_max without a client: a clear error
    g3 = write_gram(gs, "noclient", K[:400, :400], 128)
    with pytest.raises(ValueError, match="spectrum_dense_max"):
        DS.finalize_gram(g3, None, client=None, settings=DS.SpectrumSettings(dense_max=100))


def test_interlacing_on_nested_subsets_of_the_stored_ntk_values(client, tmp_path):
    # The real empirical NTK of a small model (P = 1440 parameters > N = 900: positive definite).
    # Cauchy interlacing: a leading principal sub-matrix has lambda_min >= lambda_min(K) and
    # lambda_max <= lambda_max(K).  Checked on the values the workflow stores (iterative path,
    # dense_max below every size): a stored lambda_min is a Ritz value, >= the true one, so
    # stored(sub) >= true(sub) >= true(K) >= stored(K) - residual(K); likewise for lambda_max.
    spec = ModelSpec(width=32, d=4, d_s=4, n_outputs=1, scaling="inv_sqrt", init="lecun", hidden=True, dtype="float64")
    params = init_params(spec, 0)
    X = torch.as_tensor(make_synthetic(900, d_s=4, d=4, token_norm=math.sqrt(4), seed=11).X)
    K = ntk_matrix(params, spec, X)
    gs = tmp_path / "gram.zarr"
    vals = {}
    for m in (100, 300, 900):
        g = write_gram(gs, f"n{m}", K[:m, :m], 100)
        DS.finalize_gram(g, None, client=client, settings=DS.SpectrumSettings(dense_max=50, tile=300))
        vals[m] = store.read_spectrum(gs, f"n{m}", 0)["records"]
    for small, big in ((100, 300), (300, 900), (100, 900)):
        a, b = vals[small], vals[big]
        assert a["lambda_min"]["method"] == "shift_invert"
        slack_min = b["lambda_min"]["residual"] + 1e-12 * b["lambda_max"]["value"]
        slack_max = b["lambda_max"]["residual"] + 1e-12 * b["lambda_max"]["value"]
        assert a["lambda_min"]["value"] >= b["lambda_min"]["value"] - slack_min, (small, big)
        assert a["lambda_max"]["value"] <= b["lambda_max"]["value"] + slack_max, (small, big)
    ev = np.linalg.eigvalsh(K)
    assert vals[900]["lambda_max"]["value"] == pytest.approx(ev[-1], rel=1e-10)
    # Past N ~ 200 this NTK (1440 parameters, but d = d_s = 4) is singular: at N = 900 its bottom
    # eigenvalues are float64 rounding (eigvalsh: -6.3e-13, -4.0e-13, ...), below the precision of K,
    # eps N max diag K = 1.1e-11.  The iteration says so in a few solves, and its value (an upper bound)
    # lies within its error of eigvalsh's.
    for m in (300, 900):
        r = vals[m]["lambda_min"]
        assert r["verdict"] == S.BELOW_PRECISION and r["stopped"] == "below_precision" and r["iterations"] <= 5
        assert r["rounding"] == pytest.approx(EPS * m * np.diag(K[:m]).max(), rel=1e-12)
    r = vals[900]["lambda_min"]
    assert abs(r["value"] - ev[0]) <= r["error"] and abs(ev[0]) < r["rounding"]
    r = vals[100]["lambda_min"]  # N = 100: positive definite (eigvalsh 3.3e-4), resolved
    ev1 = np.linalg.eigvalsh(K[:100, :100])
    assert r["verdict"] == S.RESOLVED and ev1[0] > r["error"] and r["value"] == pytest.approx(ev1[0], rel=1e-7)


def test_extremes_only_gram_is_complete_verified_and_damage_is_found(tmp_path):
    gs = tmp_path / "gram.zarr"
    K = ntk_like(200, 400, seed=7)
    ev = np.linalg.eigvalsh(K)
    g = write_gram(gs, "r", K, 64)
    rounding = EPS * 200 * np.diag(K).max()
    spec = {"lambda_min": {"value": float(ev[0]), "method": "shift_invert", "iterations": 9, "residual": 1e-12,
                           "rounding": rounding, "solver_error": 1e-12, "error": rounding + 1e-12,
                           "verdict": S.RESOLVED, "certificate": [float(ev[0]) * 0.99, float(ev[0]) * (1 + 1e-12)]},
            "lambda_max": {"value": float(ev[-1]), "method": "lanczos", "iterations": 5, "residual": 1e-10}}
    store.finalize_gram(g, None, None, spectrum=spec)
    assert store.gram_complete(gs, "r", 0) and g.attrs["spectrum_arrays"] == ["extremes"]

    def problems():
        return store.check_gram(gs, "r", 0)

    assert problems() == []
    import zarr

    ext = zarr.open_array(str(store.gram_path(gs, "r", 0) / "extremes"), mode="a")
    ext[0] = ev[0] * 1.5  # changed after publication: the digest no longer matches
    assert any("do not match their recorded digest" in p for p in problems())
    bad = np.asarray([np.diag(K).min() * 2, ev[-1]])  # lambda_min above a diagonal entry: impossible
    ext[...] = bad
    g.attrs["extremes_digest"] = store.block_digest(bad)
    assert any("contradict diag K" in p for p in problems())
    import shutil

    shutil.rmtree(store.gram_path(gs, "r", 0) / "extremes")
    assert not store.gram_complete(gs, "r", 0)  # its spectrum is missing: not complete, recomputed on resume
    g2 = store.ensure_gram(gs, "r", 0, 200, 64)
    assert g2.attrs["complete"] is False


def test_dense_gram_stores_its_eigenvalues_only_and_old_stores_still_read(tmp_path):
    """A dense Gram's extremes are the ends of its eigenvalues: no `extremes` array (two files fewer);
    a store finalised before this (both arrays) still reads, is complete and verifies."""
    gs = tmp_path / "gram.zarr"
    K = ntk_like(100, 200, seed=8)
    ev = np.linalg.eigvalsh(K)

    def problems(rid):
        return store.check_gram(gs, rid, 0)

    g = write_gram(gs, "new", K, 128)
    DS.finalize_gram(g, None, client=None, settings=DS.SpectrumSettings(dense_max=1000))
    p = store.gram_path(gs, "new", 0)
    assert g.attrs["spectrum_arrays"] == ["eigenvalues"] and not (p / "extremes").exists()
    assert "extremes_digest" not in g.attrs
    assert store.gram_complete(gs, "new", 0) and problems("new") == []
    sp = store.read_spectrum(gs, "new", 0)
    assert (sp["lambda_min"], sp["lambda_max"]) == (sp["eigenvalues"][0], sp["eigenvalues"][-1])
    assert sp["records"]["lambda_min"]["value"] == sp["lambda_min"]
    np.testing.assert_allclose(sp["eigenvalues"], ev, rtol=0, atol=100 * EPS * ev[-1])
    # the layout of before: extremes and eigenvalues both, spectrum_arrays naming both
    g2 = write_gram(gs, "old", K, 128)
    DS.finalize_gram(g2, None, client=None, settings=DS.SpectrumSettings(dense_max=1000))
    ext = np.asarray([sp["lambda_min"], sp["lambda_max"]])
    g2.create_array("extremes", data=ext, dimension_names=["extreme"])
    g2.attrs["extremes_digest"] = store.block_digest(ext)
    g2.attrs["spectrum_arrays"] = ["extremes", "eigenvalues"]
    assert store.gram_complete(gs, "old", 0) and problems("old") == []
    sp2 = store.read_spectrum(gs, "old", 0)
    assert (sp2["lambda_min"], sp2["lambda_max"]) == (sp["lambda_min"], sp["lambda_max"])
    # its eigenvalues deleted: not complete (the spectrum is recomputed on resume)
    import shutil

    shutil.rmtree(p / "eigenvalues")
    assert not store.gram_complete(gs, "new", 0)


def test_lanczos_reports_progress_every_step():
    """Long Lanczos runs (shift-invert on a near-singular NTK takes hundreds of solves) report each step:
    the callback sees steps 1..k, the Ritz values grow towards the returned value, the estimates end
    at the returned one."""
    from tfconv.core import spectra as SP

    rng = np.random.default_rng(3)
    A = rng.standard_normal((300, 300))
    K = A @ A.T
    seen = []
    theta, _, k, est = SP.lanczos_largest(K.__matmul__, 300, tol=1e-12, progress=lambda *a: seen.append(a))
    assert [s[0] for s in seen] == list(range(1, k + 1))
    assert all(b[1] >= a[1] - 1e-9 * theta for a, b in zip(seen, seen[1:]))  # Ritz values never decrease
    assert seen[-1][1] == theta and seen[-1][2] == est
    assert abs(theta - np.linalg.eigvalsh(K)[-1]) <= 1e-9 * theta


def test_verify_checks_lambda_min_error_verdict_and_certificate(tmp_path):
    """`tfconv verify` (store.check_gram) recomputes the precision of K from the stored K and checks each
    recorded field of lambda_min against it: rounding = eps_K N max diag K, error = rounding + solver
    error, the verdict the value and error give, the value inside its certificate; a record without
    them is a problem once the Gram says its precision."""
    gs = tmp_path / "gram.zarr"
    K = ntk_like(150, 300, seed=12)
    g = write_gram(gs, "r", K, 64, precision="float32")
    DS.finalize_gram(g, None, client=None, settings=DS.SpectrumSettings(dense_max=1000))
    rec0 = dict(g.attrs["spectrum"])
    lm = dict(rec0["lambda_min"])
    assert lm["rounding"] == pytest.approx(np.finfo(np.float32).eps * 150 * np.diag(K).max(), rel=1e-12)
    assert lm["verdict"] == S.RESOLVED and store.check_gram(gs, "r", 0) == []

    def with_lambda_min(**changes):
        g.attrs["spectrum"] = dict(rec0, lambda_min=dict(lm, **changes))
        return store.check_gram(gs, "r", 0)

    assert any("rounding level" in p for p in with_lambda_min(rounding=lm["rounding"] / 2))
    assert any("is not rounding" in p for p in with_lambda_min(error=lm["rounding"] / 2))
    assert any("verdict is 'below the precision of K'" in p for p in with_lambda_min(verdict=S.BELOW_PRECISION))
    assert any("outside its certificate" in p for p in with_lambda_min(certificate=[0.0, lm["value"] / 2]))
    assert any("no error estimate" in p for p in with_lambda_min(verdict=None))
    g.attrs["spectrum"] = rec0
    g.attrs["precision"] = "float16"
    assert any("float16" in p for p in store.check_gram(gs, "r", 0))
    g.attrs["precision"] = "float32"
    assert store.check_gram(gs, "r", 0) == []
    # the statistics the aggregate reads carry the assessment
    st = store.gram_statistics_stored(gs, "r", 0)
    assert st["lambda_min_verdict"] == S.RESOLVED and st["lambda_min_error"] == lm["error"]
    assert np.isnan(st["lambda_min_bracket_low"])  # dense: no certificate


def rounding_cluster_kernel(n: int = 1200, r: int = 300, seed: int = 13) -> np.ndarray:
    """J J^T / r + 11^T computed in float32 (stored in float64, as a float32 Gram is): rank r + 1 < n, so
    its n - r - 1 smallest eigenvalues are 0 in exact arithmetic and, in float32, a cluster of rounding
    noise of either sign (numerically indefinite), as the issue's width-256 NTK at N = 20,000."""
    J = np.random.default_rng(seed).standard_normal((n, r)).astype(np.float32)
    K32 = (J @ J.T) / np.float32(r) + np.float32(1.0)
    K = K32.astype(np.float64)
    return 0.5 * (K + K.T)


def test_rounding_cluster_is_below_the_precision_of_K_within_a_few_solves():
    """The unit test of the stopping rule: a kernel whose smallest eigenvalues are below its rounding
    level is reported "below the precision of K" within MIN_SOLVES..5 solves, with a value inside its
    error of the true bottom; the relative rule alone (the rule before) spends its whole budget chasing
    the noise."""
    n = 1200
    K = rounding_cluster_kernel(n)
    ev = np.linalg.eigvalsh(K)
    rounding = S.rounding_level(np.diag(K).max(), n, "float32")
    assert ev[0] < 0 and np.abs(ev[:n - 301]).max() < rounding  # a rounding cluster, indefinite
    it = S.extreme_eigenvalues(K, dense_max=10, certificate_rtol=0.01, precision="float32")
    rec = it["lambda_min"]
    assert rec.verdict == S.BELOW_PRECISION and rec.notes["stopped"] == "below_precision"
    assert S.MIN_SOLVES <= rec.iterations <= 5
    assert rec.rounding == pytest.approx(rounding) and rec.error >= rounding and rec.value <= rounding
    assert ev[0] - rec.error <= rec.value  # an upper bound of the bottom, within its error
    kinds = [(t["kind"], t["ok"]) for t in rec.notes["certificate_trials"]]
    assert kinds[0] == ("cholesky", False) and ("cholesky", True) in kinds  # K itself does not factor
    assert kinds.count(("cholesky", True)) == 1  # no certificate factorisation for a value below precision
    # the relative rule alone (the rule before: 1e-10 on the inverse) chases the noise for 100+ solves
    L, _ = S.dense_cholesky(K, rec.shift)
    old = S.lambda_min_shift_invert(S.cho_solver(L), K.__matmul__, n, rec.shift, tol=1e-10, maxiter=300, block=1)
    assert old.iterations >= 20 * rec.iterations and abs(old.value) < rounding


def test_block_shift_invert_resolves_a_clustered_bottom_in_fewer_solves():
    """An NTK's bottom is a cluster (N = 3,000 reviews, width 256: 1.458e-3, 1.529e-3, 1.586e-3, 1.595e-3,
    ...): block Lanczos (SHIFT_INVERT_BLOCK vectors per solve) reaches the same lambda_min, within the
    stated error of the dense value, in fewer solves than one vector (on that NTK: 18 against 31)."""
    n = 600
    rng = np.random.default_rng(3)
    Q = np.linalg.qr(rng.standard_normal((n, n)))[0]
    ev = np.concatenate([1.458e-3 * (1 + 0.02 * np.arange(40) ** 1.2), np.geomspace(0.01, 50, n - 41), [900.0]])
    K = (Q * ev) @ Q.T
    K = 0.5 * (K + K.T)
    dense = np.linalg.eigvalsh(K)
    L, _ = S.dense_cholesky(K)
    rounding = S.rounding_level(np.diag(K).max(), n, "float64")
    atol = S.solver_tolerance(rounding, dense[-1])
    recs = {b: S.assess_lambda_min(S.lambda_min_shift_invert(S.cho_solver(L), K.__matmul__, n, 0.0, atol=atol,
                                                             floor=rounding, block=b), rounding, dense[-1])
            for b in (1, S.SHIFT_INVERT_BLOCK)}
    for r in recs.values():
        assert r.verdict == S.RESOLVED and abs(r.value - dense[0]) <= r.error
        assert abs(r.value - dense[0]) <= 1e-6 * dense[0]
    assert recs[S.SHIFT_INVERT_BLOCK].iterations < 0.75 * recs[1].iterations
    assert recs[S.SHIFT_INVERT_BLOCK].notes["block"] == S.SHIFT_INVERT_BLOCK


def test_rounding_cluster_through_the_stored_gram(client, tmp_path):
    """The same through the workflow's iterative path (Zarr K, Dask Cholesky and solves): a float32 Gram
    with a rounding-cluster bottom is finalised in a few solves, below the precision of K, and verifies."""
    n = 1200
    K = rounding_cluster_kernel(n)
    gs = tmp_path / "gram.zarr"
    g = write_gram(gs, "r", K, 300, precision="float32")
    DS.finalize_gram(g, None, client=client, settings=DS.SpectrumSettings(dense_max=100, tile=600,
                                                                          certificate_rtol=0.01))
    rec = store.read_spectrum(gs, "r", 0)["records"]
    r = rec["lambda_min"]
    assert rec["precision"] == "float32" and r["verdict"] == S.BELOW_PRECISION
    assert r["stopped"] == "below_precision" and r["iterations"] <= 5
    assert store.check_gram(gs, "r", 0) == []
    assert set(rec["seconds"]) >= {"lambda_max", "cholesky", "shift_invert"} and "certificate" not in rec["seconds"]
    assert r["certificate_trials"][0]["sigma"] == 0.0 and "rank_bound" not in r


def test_a_stored_rank_bound_below_n_skips_the_unshifted_cholesky(client, tmp_path):
    """The Gram's ``rank_bound`` attribute (what `assemble_grams` records from the run's model) reaches the
    iterative path: a K of rank 100 < n = 1200 is factored first at a negative shift, and its record says
    why; it is still below the precision of K, and verifies."""
    J = np.random.default_rng(4).standard_normal((1200, 100))
    K = J @ J.T / 100
    gs = tmp_path / "gram.zarr"
    g = write_gram(gs, "s", K, 300, rank_bound=100)
    DS.finalize_gram(g, None, client=client, settings=DS.SpectrumSettings(dense_max=100, tile=600))
    r = store.read_spectrum(gs, "s", 0)["records"]["lambda_min"]
    assert r["rank_bound"] == 100 and r["certificate_trials"][0]["sigma"] < 0
    assert all(t["sigma"] != 0.0 for t in r["certificate_trials"] if t["kind"] == "cholesky")
    assert r["verdict"] == S.BELOW_PRECISION and store.check_gram(gs, "s", 0) == []
