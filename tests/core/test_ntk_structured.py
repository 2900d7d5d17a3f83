"""The structured NTK engine against the Jacobian-contraction reference `ntk_block_exact`.

Tolerances (one place): the error is max|K - K_ref| / max|K_ref| over the block.
* float64: 1e-10.  Both engines are exact up to rounding; the observed error is ~1e-15.
* float32: 1e-5.  Both engines compute in float32 (the reference forms J in float32 and contracts in
  float64; the structured engine runs every matmul, including the pair GEMMs whose inner dimension
  is C*width*d ~ 1e4 terms here, in float32 and adds the terms in float64).  Summing ~1e4 float32
  products has a worst-case relative error of about 1e4 * 6e-8 = 6e-4 and a typical one of
  sqrt(1e4) * 6e-8 = 6e-6; the observed error is ~1e-7, so 1e-5 leaves a wide margin while still
  catching any wrong term (the smallest term, Wq/Wk, is ~1e-3 of K here).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from tfconv.core.model import ModelSpec, init_params
from tfconv.core.ntk import ntk_block, ntk_block_exact
from tfconv.core.ntk_structured import FORMS, choose_forms, flop_count, ntk_block_structured

RTOL = {"float32": 1e-5, "float64": 1e-10}


def rel_err(K, K_ref):
    return float(np.abs(K - K_ref).max() / np.abs(K_ref).max())


def make(width=16, d=5, d_s=4, n_outputs=1, scaling="inv_sqrt", init="lecun", hidden=True,
         dtype="float64", n=11, seed=0):
    spec = ModelSpec(width=width, d=d, d_s=d_s, n_outputs=n_outputs, scaling=scaling, init=init,
                     hidden=hidden, dtype=dtype)
    params = init_params(spec, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    X = torch.randn(n, d_s, d, generator=gen, dtype=torch.float64)
    X = X / X.norm(dim=-1, keepdim=True)  # unit-norm tokens, as the synthetic data
    return spec, params, X


GRID = list(itertools.product(["float32", "float64"], ["lecun", "he", "ntk"], ["inv_sqrt", "inv"],
                              [True, False], [1, 3]))


@pytest.mark.parametrize("dtype,init,scaling,hidden,C", GRID)
def test_matches_exact_full_and_rectangular(dtype, init, scaling, hidden, C):
    spec, params, X = make(n_outputs=C, scaling=scaling, init=init, hidden=hidden, dtype=dtype)
    K_ref = ntk_block_exact(params, spec, X)
    K = ntk_block_structured(params, spec, X, chunk_size=3, col_chunk_size=4)
    assert K.dtype == np.float64 and K.shape == K_ref.shape
    assert rel_err(K, K_ref) < RTOL[dtype]
    assert np.array_equal(K, K.T)  # X_cols=None: upper-triangle chunk pairs, mirrored
    # a rectangular block (rows != cols, overlapping sample sets)
    Kb = ntk_block_structured(params, spec, X[:4], X[2:], chunk_size=3)
    assert Kb.shape == (4, 9)
    assert rel_err(Kb, K_ref[:4, 2:]) < RTOL[dtype]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("hidden,C", [(True, 1), (True, 3), (False, 3)])
def test_every_form_matches_exact(dtype, hidden, C):
    """Each weight matrix's alternative forms (forced) give the same kernel."""
    spec, params, X = make(n_outputs=C, hidden=hidden, dtype=dtype, init="ntk", n=7)
    K_ref = ntk_block_exact(params, spec, X)
    for qk, wv, wh in itertools.product(FORMS["qk"], FORMS["Wv"], FORMS["Wh"]):
        forms = {"qk": qk, "Wv": wv, "Wh": wh}
        K = ntk_block_structured(params, spec, X, chunk_size=2, forms=forms)
        assert rel_err(K, K_ref) < RTOL[dtype], forms
        if not hidden:
            break  # without Wh only the Wv/qk forms matter


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_blocks_tile_the_full_matrix(dtype):
    spec, params, X = make(width=32, d=6, d_s=5, n_outputs=3, dtype=dtype, n=13, init="he")
    K_ref = ntk_block_exact(params, spec, X)
    edges = [0, 5, 9, 13]
    K = np.full((13, 13), np.nan)
    for (a0, a1), (b0, b1) in itertools.product(zip(edges, edges[1:]), repeat=2):
        K[a0:a1, b0:b1] = ntk_block_structured(params, spec, X[a0:a1], X[b0:b1], chunk_size=2)
    assert rel_err(K, K_ref) < RTOL[dtype]
    assert rel_err(K, ntk_block_structured(params, spec, X)) < RTOL[dtype]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_larger_width_and_samples(dtype):
    """width 64, N = 20, d_s = 8: longer float32 accumulations than the small grid."""
    spec, params, X = make(width=64, d=16, d_s=8, n_outputs=1, dtype=dtype, n=20)
    K_ref = ntk_block_exact(params, spec, X)
    assert rel_err(ntk_block_structured(params, spec, X), K_ref) < RTOL[dtype]


def test_wide_inputs_pick_the_other_forms():
    """With d >> width and few tokens the cost model picks token/explicit forms: still exact."""
    spec, params, X = make(width=16, d=40, d_s=2, n_outputs=2, n=6)
    assert choose_forms(spec) == {"qk": "explicit", "Wv": "token", "Wh": "token"}
    assert rel_err(ntk_block_structured(params, spec, X), ntk_block_exact(params, spec, X)) < RTOL["float64"]


@pytest.mark.parametrize("symmetric", [True, False])
def test_panels_when_factors_exceed_the_cache(symmetric):
    """A tiny max_cache_bytes forces row/column panels and factor recomputation."""
    spec, params, X = make(n_outputs=3, n=13)
    K_ref = ntk_block_exact(params, spec, X)
    if symmetric:
        K = ntk_block_structured(params, spec, X, chunk_size=2, max_cache_bytes=1)
        assert np.array_equal(K, K.T)
        assert rel_err(K, K_ref) < RTOL["float64"]
    else:
        K = ntk_block_structured(params, spec, X[:9], X[3:], chunk_size=2, max_cache_bytes=1)
        assert rel_err(K, K_ref[:9, 3:]) < RTOL["float64"]


@pytest.mark.parametrize("chunk,col_chunk", [(1, 1), (4, 4), (5, 7), (64, None)])
def test_chunking_does_not_change_the_result(chunk, col_chunk):
    spec, params, X = make(n=11)
    K0 = ntk_block_exact(params, spec, X)
    K = ntk_block_structured(params, spec, X, chunk_size=chunk, col_chunk_size=col_chunk)
    assert rel_err(K, K0) < RTOL["float64"]


def test_inputs_numpy_torch_and_dispatcher():
    spec, params, X = make(dtype="float32")
    K_t = ntk_block_structured(params, spec, X)  # float64 tensor input, cast to float32 params
    K_np = ntk_block_structured(params, spec, X.numpy().astype(np.float32))
    np.testing.assert_array_equal(K_t, K_np)
    np.testing.assert_array_equal(ntk_block(params, spec, X, engine="structured"), K_t)


def test_empty_blocks_and_bad_input():
    spec, params, X = make()
    assert ntk_block_structured(params, spec, X[:0], X).shape == (0, 11)
    with pytest.raises(ValueError, match="d_s"):
        ntk_block_structured(params, spec, X[:, :, :3])
    with pytest.raises(ValueError, match="forms"):
        ntk_block_structured(params, spec, X, forms={"Wh": "nope"})
    spec_nohid = ModelSpec(width=16, d=5, d_s=4, hidden=False, dtype="float64")
    with pytest.raises(ValueError, match="Wh"):
        ntk_block_structured(params, spec_nohid, X)


def test_flop_count_formula():
    spec = ModelSpec(width=1024, d=32, d_s=8, dtype="float32")
    w, d = 1024, 32
    f = flop_count(spec, 512, 256)
    # default forms for this shape: qk "R", Wv explicit, Wh lowrank
    assert f["per_pair"] == 2 * (w + w * d + w * d + 2 * d * d)
    assert f["n_pairs"] == 512 * 256 and f["n_samples"] == 768
    # symmetric: the pairs on or above the diagonal chunk blocks only; with a token form the pair GEMMs
    # are chunk_size rows, with GEMM forms only at least GEMM_ROWS (one GEMM per row chunk)
    fs = flop_count(spec, 2048, None, chunk_size=128, forms={"Wv": "token"})
    assert fs["n_pairs"] == sum(128 * (2048 - a) for a in range(0, 2048, 128))
    from tfconv.core.ntk_structured import GEMM_ROWS
    fs = flop_count(spec, 2048, None, chunk_size=128)
    assert fs["n_pairs"] == sum(GEMM_ROWS * (2048 - a) for a in range(0, 2048, GEMM_ROWS))


@pytest.mark.parametrize("hidden", [True, False])
def test_gemm_chunks_tile_the_block(monkeypatch, hidden):
    """With GEMM forms only, the pair GEMMs are GEMM_ROWS x GEMM_COLS: shrunk to 4 x 6 here, blocks of
    13 rows cut into uneven chunks (diagonal and rectangular) still equal the reference."""
    from tfconv.core import ntk_structured as S

    monkeypatch.setattr(S, "GEMM_ROWS", 4)
    monkeypatch.setattr(S, "GEMM_COLS", 6)
    sp, p, X = make(n=13, dtype="float64", seed=5, hidden=hidden)
    assert S._pair_chunks(sp, S.choose_forms(sp), 1, None) == (4, 6)
    K_ref = ntk_block_exact(p, sp, X)
    K = ntk_block_structured(p, sp, X, chunk_size=1)
    assert rel_err(K, K_ref) < RTOL["float64"] and np.array_equal(K, K.T)
    assert rel_err(ntk_block_structured(p, sp, X[:5], X[3:], chunk_size=1), K_ref[:5, 3:]) < RTOL["float64"]


def test_workspace_reuse_across_calls_threads_and_dtypes(monkeypatch):
    """The factor buffers kept between calls (`_Workspace`) never leak one call's factors into the next:
    calls that shrink, grow, change dtype, use both slots (rectangular blocks) or run in two threads at
    once all equal the reference; buffers above the keep limit are dropped after the call."""
    import threading

    from tfconv.core import ntk_structured as S

    S.release_workspace()
    cases = [make(n=n, dtype=dt, seed=s) for n, dt, s in [(13, "float64", 0), (5, "float64", 1),
                                                        (17, "float32", 2), (9, "float64", 3)]]
    refs = [ntk_block_exact(p, sp, X) for sp, p, X in cases]
    for (sp, p, X), K_ref in zip(cases, refs):
        assert rel_err(ntk_block_structured(p, sp, X, chunk_size=4), K_ref) < RTOL[sp.dtype]
        assert rel_err(ntk_block_structured(p, sp, X[:3], X[2:], chunk_size=4), K_ref[:3, 2:]) < RTOL[sp.dtype]
    assert set(S._WORKSPACE.buffers) == {"rows", "cols"}  # kept: far below the limit
    # two threads at once, each with its own workspace
    results = {}

    def work(i):
        sp, p, X = cases[i]
        results[i] = [ntk_block_structured(p, sp, X, chunk_size=4) for _ in range(5)]

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    for i in (0, 3):
        assert all(rel_err(K, refs[i]) < RTOL["float64"] for K in results[i])
    # a thread's buffers are freed from another thread (`release_all_workspaces`, what assemble_grams runs
    # on every Dask worker after the blocks), and a finished thread's buffers are not kept alive
    import gc

    held, go = threading.Event(), threading.Event()

    def hold():
        sp, p, X = cases[0]
        ntk_block_structured(p, sp, X, chunk_size=4)
        held.set()
        go.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(10)
    assert S._WORKSPACE.buffers  # this thread's, from the calls above
    assert S.release_all_workspaces() > 0 and S._WORKSPACE.buffers == {}
    go.set()
    t.join()
    gc.collect()
    assert all(not b for b in S._ALL_BUFFERS) and len(S._ALL_BUFFERS) <= 2
    monkeypatch.setattr(S, "WORKSPACE_KEEP_BYTES", 1000)
    sp, p, X = cases[0]
    ntk_block_structured(p, sp, X, chunk_size=4)
    assert S._WORKSPACE.buffers == {}  # above the keep limit: freed after the call


@pytest.mark.parametrize("hidden,C,forms", [(True, 1, None), (True, 3, {"qk": "explicit"}), (True, 2, {"Wh": "explicit"}),
                                            (False, 1, None), (False, 3, {"qk": "explicit"})])
def test_factor_rows_give_the_kernel(hidden, C, forms):
    """K = F F^T with F from `factor_rows` (what a Gram's block tasks share): F has `factor_width` columns,
    F_I F_J^T equals the exact engine's block (float64: 1e-10 relative), the symmetric block is the
    engine's bit for bit (same GEMMs) and exactly symmetric; token forms have no factor rows."""
    from tfconv.core.ntk_structured import factor_rows, factor_width, ntk_block_from_factors

    spec, params, X = make(n_outputs=C, hidden=hidden, n=13, width=12, d=5)
    P = {k: v.double() for k, v in params.items()}
    G = factor_width(spec, forms)
    F = factor_rows(P, spec, X, 4, forms=forms).clone()
    assert F.shape == (13, G)
    K_ref = ntk_block_exact(P, spec, X)
    K = ntk_block_from_factors(F)
    assert np.array_equal(K, K.T) and rel_err(K, K_ref) < RTOL["float64"]
    assert np.array_equal(K, ntk_block_structured(P, spec, X, chunk_size=4, forms=forms))
    assert rel_err(ntk_block_from_factors(F[:5], F[5:]), K_ref[:5, 5:]) < RTOL["float64"]
    assert factor_width(spec, {"Wv": "token"}) is None
    with pytest.raises(ValueError, match="token form"):
        factor_rows(P, spec, X, forms={"Wv": "token"})
    with pytest.raises(ValueError, match="same G"):
        ntk_block_from_factors(F, F[:, 1:])


def test_factor_width_is_the_rank_bound():
    """rank K <= G: with more samples than G columns, K = F F^T is singular (the bound is not tight at
    this tiny width: the factor columns are themselves dependent)."""
    from tfconv.core.ntk_structured import factor_rows, factor_width, ntk_block_from_factors

    spec, params, X = make(width=3, d=2, d_s=3, n=40)
    P = {k: v.double() for k, v in params.items()}
    G = factor_width(spec)
    assert G == 3 * (1 + 2 * 2) + 2 * 2 * 2 < 40  # width (1 + 2d) + 2 d^2 = 23
    K = ntk_block_from_factors(factor_rows(P, spec, X).clone())
    assert 0 < np.linalg.matrix_rank(K) <= G
    from tfconv.core.ntk_structured import rank_bound

    P = sum(v.numel() for v in params.values())
    assert rank_bound(spec) == min(G, P, factor_width(spec, {"qk": "explicit"}), factor_width(spec, {"Wh": "explicit"}))
    assert np.linalg.matrix_rank(K) <= rank_bound(spec) <= G
    assert rank_bound(ModelSpec(width=256, d=49, d_s=16, n_outputs=1, hidden=True)) == 256 * 99 + 2 * 49 ** 2  # 30,146
    assert rank_bound(ModelSpec(width=8, d=4, d_s=4, n_outputs=1, embed=6)) is None  # ViT front end: no bound
    assert np.linalg.eigvalsh(K)[0] < 1e-12 * np.linalg.eigvalsh(K)[-1]  # exactly singular up to rounding
