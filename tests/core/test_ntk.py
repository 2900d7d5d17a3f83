"""The empirical NTK K[i, j] = (1/C) sum_c <df_c(X_i)/dtheta, df_c(X_j)/dtheta> (tfconv.ntk docstring).

References built here, independently of tfconv.ntk: a plain loop of torch.autograd.grad per sample
and per output, and Jacobians by central finite differences of f in float64.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from tfconv.data import make_synthetic
from tfconv.core.model import ModelSpec, forward, init_params
from tfconv.core.ntk import gram_eigenvalues, ntk_block, ntk_block_exact, ntk_matrix

torch.set_num_threads(2)

try:  # the structured engine is written separately; test it whenever it imports
    import tfconv.core.ntk_structured  # noqa: F401

    ENGINES = ("exact", "structured")
except Exception:  # pragma: no cover - depends on the state of the tree
    ENGINES = ("exact",)

TOL = {
    # Engines vs the autograd loop, all float64: the same derivatives, different summation order;
    # rounding is ~ eps * (number of terms ~ 1e2) ~ 1e-14 relative to max|K|.
    "loop_rel": 1e-11,
    # Finite-difference Jacobian with step h = 1e-6: each entry has relative error ~ h^2 (truncation)
    # + eps / h ~ 1e-10 (rounding); K inherits ~1e-10 relative to max|K|.  1e-7 is a wide margin
    # that still catches any missing or mis-scaled parameter block (>= 1e-4 of K here).
    "fd_step": 1e-6,
    "fd_rel": 1e-7,
    # Blocks, chunks and transposes are the same numbers summed in a different order (different
    # GEMM shapes): agreement to ~1e-15 relative is observed; 1e-12 allows for other BLAS builds.
    "tile_rel": 1e-12,
    "sym_rel": 1e-12,
    # PSD: min eigenvalue >= -1e-10 * max eigenvalue (rounding of a float64 Gram matrix is ~1e-15).
    "psd_rel": 1e-10,
    # log-log slope of the mean NTK trace against width.  6 seeds x 6 samples per width; the seed-to-
    # seed spread of the mean trace is ~10 % at width 16 and falls like width^-1/2, which moves a
    # slope fitted over log(4096/16) = 5.5 by a few 0.01.  The leading term is exactly linear (LeCun/
    # He) or constant (NTK); O(1) corrections (the Wv/Wq/Wk terms under LeCun, 1/width terms under NTK
    # init) bend it by <= 0.04 over this range.  +-0.1 is a margin over both that separates 1 from 0.
    "trace_slope": 0.1,
}


def setup(width=6, d=3, d_s=3, n_outputs=1, scaling="inv_sqrt", init="lecun", hidden=True, n=7,
          seed=0, token_norm=None):
    spec = ModelSpec(width=width, d=d, d_s=d_s, n_outputs=n_outputs, scaling=scaling, init=init,
                     hidden=hidden, dtype="float64")
    params = init_params(spec, seed)
    X = make_synthetic(n, d_s=d_s, d=d, token_norm=math.sqrt(d) if token_norm is None else token_norm,
                       seed=seed + 10).X
    return spec, params, torch.as_tensor(X)


def jacobian_loop(params, spec, X):
    """(N, C, P) Jacobian: one torch.autograd.grad call per sample and per output."""
    theta = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    names = list(theta)
    rows = []
    for i in range(X.shape[0]):
        f = forward(theta, X[i:i + 1], spec.scales())[0]
        per_c = []
        for c in range(spec.n_outputs):
            g = torch.autograd.grad(f[c], [theta[k] for k in names], retain_graph=True)
            per_c.append(torch.cat([t.reshape(-1) for t in g]))
        rows.append(torch.stack(per_c))
    return torch.stack(rows).numpy()


def jacobian_fd(params, spec, X, h=TOL["fd_step"]):
    """(N, C, P) Jacobian by central differences of f, one parameter entry at a time."""
    names = list(params)
    cols = []
    with torch.no_grad():
        for k in names:
            for idx in range(params[k].numel()):
                plus = {j: v.clone() for j, v in params.items()}
                minus = {j: v.clone() for j, v in params.items()}
                plus[k].view(-1)[idx] += h
                minus[k].view(-1)[idx] -= h
                diff = forward(plus, X, spec.scales()) - forward(minus, X, spec.scales())
                cols.append((diff / (2 * h)).numpy())
    return np.stack(cols, axis=-1)


def kernel_from_jacobian(J):
    return np.einsum("icp,jcp->ij", J, J) / J.shape[1]


def rel(K, K_ref):
    return float(np.abs(K - K_ref).max() / np.abs(K_ref).max())


GRID = list(itertools.product(["lecun", "he", "ntk"], ["inv_sqrt", "inv", 0.7], [True, False], [1, 3]))


@pytest.mark.parametrize("init,scaling,hidden,C", GRID)
def test_ntk_matches_autograd_loop(init, scaling, hidden, C):
    spec, params, X = setup(n_outputs=C, scaling=scaling, init=init, hidden=hidden)
    K_ref = kernel_from_jacobian(jacobian_loop(params, spec, X))
    assert np.abs(K_ref).max() > 1e-3
    for engine in ENGINES:
        K = ntk_block(params, spec, X, engine=engine)
        assert K.shape == (7, 7) and K.dtype == np.float64
        assert rel(K, K_ref) <= TOL["loop_rel"], (engine, rel(K, K_ref))


@pytest.mark.parametrize("init,scaling,hidden,C", [
    ("lecun", "inv_sqrt", True, 1), ("he", "inv", False, 3), ("ntk", 0.7, True, 3), ("ntk", "inv_sqrt", False, 1),
])
def test_ntk_matches_finite_difference_jacobian(init, scaling, hidden, C):
    spec, params, X = setup(n_outputs=C, scaling=scaling, init=init, hidden=hidden, n=5)
    J = jacobian_fd(params, spec, X)
    assert J.shape == (5, C, spec.n_params())
    K_ref = kernel_from_jacobian(J)
    for engine in ENGINES:
        K = ntk_block(params, spec, X, engine=engine)
        assert rel(K, K_ref) <= TOL["fd_rel"], (engine, rel(K, K_ref))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("width,n", [(2, 30), (8, 9)])
def test_ntk_symmetric_psd(engine, width, n):
    # width 2, no hidden layer: P = 3*2*3 + 2 = 20 parameters, so with n = 30 samples K = J J^T has
    # rank <= 20 and is singular: its smallest eigenvalues are rounding-level and must not go
    # meaningfully negative.  width 8 with Wh, n = 9: a full-rank case.
    spec, params, X = setup(width=width, hidden=(width != 2), n=n, scaling="inv", init="he")
    K = ntk_block(params, spec, X, engine=engine)
    assert np.abs(K - K.T).max() <= TOL["sym_rel"] * np.abs(K).max()
    ev = np.linalg.eigvalsh(0.5 * (K + K.T))
    assert ev[0] >= -TOL["psd_rel"] * ev[-1], (ev[0], ev[-1])
    # ntk_matrix is the symmetrised full K, gram_eigenvalues its ascending spectrum.
    Km = ntk_matrix(params, spec, X, engine=engine)
    np.testing.assert_array_equal(Km, Km.T)
    np.testing.assert_allclose(gram_eigenvalues(Km), ev, rtol=0, atol=1e-12 * ev[-1])


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("C", [1, 3])
def test_blocks_tile_the_full_kernel(engine, C):
    spec, params, X = setup(n_outputs=C, n=13, init="ntk", scaling="inv")
    K = ntk_block(params, spec, X, engine=engine)
    rows = [(0, 4), (4, 9), (9, 13)]  # uneven last block
    cols = [(0, 5), (5, 13)]  # rectangular blocks
    T = np.full_like(K, np.nan)
    for (r0, r1), (c0, c1) in itertools.product(rows, cols):
        blk = ntk_block(params, spec, X[r0:r1], X[c0:c1], engine=engine)
        assert blk.shape == (r1 - r0, c1 - c0)
        T[r0:r1, c0:c1] = blk
    assert np.all(np.isfinite(T))
    assert rel(T, K) <= TOL["tile_rel"]
    # Swapping rows and columns gives the transpose.
    KT = ntk_block(params, spec, X[9:13], X[0:4], engine=engine)
    assert rel(KT, K[9:13, 0:4]) <= TOL["tile_rel"]
    # chunk_size smaller than N (and not dividing it) gives the same K.
    for chunk in (3, 5):
        assert rel(ntk_block(params, spec, X, engine=engine, chunk_size=chunk), K) <= TOL["tile_rel"]
    # numpy input and torch input are the same.
    assert rel(ntk_block(params, spec, X.numpy(), engine=engine), K) <= TOL["tile_rel"]


def test_unknown_engine_is_rejected():
    spec, params, X = setup()
    with pytest.raises(ValueError, match="engine"):
        ntk_block(params, spec, X, engine="fast")


def test_exact_engine_float32_close_to_float64():
    spec, params, X = setup(width=16, n=6)
    spec32 = ModelSpec(**dict(spec.to_dict(), dtype="float32"))
    K64 = ntk_block_exact(params, spec, X)
    K32 = ntk_block_exact({k: v.float() for k, v in params.items()}, spec32, X.float())
    assert K32.dtype == np.float64
    # float32 Jacobians carry ~1e-7 relative error; 1e-4 is a wide margin.
    assert rel(K32, K64) <= 1e-4


# ----------------------------------------------------------------------------------------------
# NTK trace against width: K_ii = |J_i|^2 per sample by autograd (the diagonal only)
# ----------------------------------------------------------------------------------------------

def mean_trace(spec, seeds, n):
    """Mean over seeds and samples of K_ii = (1/C) sum_c |d f_c(X_i) / d theta|^2."""
    vals = []
    for seed in seeds:
        theta = {k: v.requires_grad_(True) for k, v in init_params(spec, seed).items()}
        X = torch.as_tensor(make_synthetic(n, d_s=spec.d_s, d=spec.d, token_norm=math.sqrt(spec.d),
                                           seed=300 + seed).X, dtype=spec.torch_dtype)
        for i in range(n):
            f = forward(theta, X[i:i + 1], spec.scales())[0, 0]
            grads = torch.autograd.grad(f, list(theta.values()))
            vals.append(sum(float((g.double() ** 2).sum()) for g in grads))
    return float(np.mean(vals))


TRACE_CASES = [
    # hidden=False reaches width 4096 cheaply (per-sample gradients are width x d); with the
    # width x width layer Wh we stop at 1024 (a 4096^2 gradient per sample costs ~0.5 s here).
    (init, hidden, slope)
    for hidden in (False, True)
    for init, slope in (("lecun", 1.0), ("he", 1.0), ("ntk", 0.0))
]


@pytest.mark.parametrize("init,hidden,slope", TRACE_CASES)
def test_ntk_trace_width_slope(init, hidden, slope):
    """Under LeCun/He (tau1 = 1) the wo term of K_ii is |pooled|^2, a sum of `width` O(1) squares:
    K grows linearly with width (slope 1).  Under NTK init tau1^2 = 1/width cancels that sum, and
    the 1/sqrt(fan_in) multipliers do the same for every other layer: K = O(1) (slope 0).
    Tokens of norm sqrt(d) make each pre-activation O(1) (science.md: Var = |x|^2 / d), so no term
    is suppressed by the data; float32 is enough for a trace."""
    widths = (16, 64, 256, 1024, 4096) if not hidden else (16, 64, 256, 1024)
    traces = [mean_trace(ModelSpec(width=w, d=4, d_s=4, init=init, hidden=hidden, dtype="float32"),
                         seeds=range(6), n=6) for w in widths]
    measured = float(np.polyfit(np.log(widths), np.log(traces), 1)[0])
    assert abs(measured - slope) <= TOL["trace_slope"], (init, hidden, measured, traces)


# ----------------------------------------------------------------------------------------------
# Gram precision (config gram.precision): independent of the training dtype
# ----------------------------------------------------------------------------------------------

def test_init_kernel_precision_is_its_own_setting():
    """A float32-trained run's K_0 is computed in float64 by default (its parameters cast once): bitwise the
    float64 engine on the cast parameters; precision="float32" gives the float32 kernel.  The step and the
    linearised curve come from that one K_0, and lambda_min carries its error and verdict."""
    from tfconv.core import spectra as S
    from tfconv.core.kernel import init_kernel, kernel_change

    data = make_synthetic(40, d_s=4, d=8, seed=3)
    spec32 = ModelSpec(width=32, d=8, d_s=4, init="lecun", dtype="float32")
    p32 = init_params(spec32, 0)
    assert p32["Wq"].dtype == torch.float32
    ik = init_kernel(spec32, data.X, data.y, p32, "0.5limit", "mean")
    K64 = ntk_matrix({k: v.double() for k, v in p32.items()}, spec32, data.X)
    K32 = ntk_matrix(p32, spec32, data.X)
    assert ik.precision == "float64" and np.array_equal(ik.K0, K64) and not np.array_equal(ik.K0, K32)
    ik32 = init_kernel(spec32, data.X, data.y, p32, "0.5limit", "mean", precision="float32")
    assert np.array_equal(ik32.K0, K32)
    # one K_0 for the step and the linearised curve
    assert ik.limit == pytest.approx(2 * 40 / np.linalg.eigvalsh(K64)[-1], rel=1e-12)
    assert ik.linearised(3)[0] == pytest.approx(0.5 * np.mean(np.sum(ik.residual0 ** 2, axis=1)), rel=1e-12)
    # the record: rounding eps_K N max diag K, the dense solver's eps_64 lambda_max, the verdict
    summ, summ32 = ik.summary(), ik32.summary()
    rounding = S.EPS64 * 40 * np.diag(K64).max()
    assert summ["kernel_precision"] == "float64" and summ32["kernel_precision"] == "float32"
    assert summ["lambda_min0_error"] == pytest.approx(rounding + S.EPS64 * ik.lambda_max, rel=1e-12)
    assert summ["lambda_min0_verdict"] == S.RESOLVED and summ32["lambda_min0_error"] > 1e6 * summ["lambda_min0_error"]
    # the kernel change at a checkpoint is computed in K_0's precision: 0 against itself
    assert kernel_change(spec32, data.X, {k: v.numpy() for k, v in p32.items()}, ik.K0) == 0.0
    with pytest.raises(ValueError, match="float16"):
        init_kernel(spec32, data.X, data.y, p32, "0.5limit", "mean", precision="float16")


def test_float32_rounding_stays_within_the_precision_of_K():
    """The precision of K, eps_K N max diag K, bounds what float32 arithmetic does to the real NTK: the
    float32 kernel differs from the float64 one by less in spectral norm (measured here: about 1/30 of the
    bound), so every eigenvalue, lambda_min included, is within it (Weyl)."""
    from tfconv.core import spectra as S

    data = make_synthetic(300, d_s=8, d=16, seed=4)
    spec = ModelSpec(width=128, d=16, d_s=8, init="lecun", dtype="float64")
    p = init_params(spec, 1)
    K64 = ntk_matrix(p, spec, data.X)
    K32 = ntk_matrix({k: v.float() for k, v in p.items()}, ModelSpec(**dict(spec.to_dict(), dtype="float32")), data.X)
    bound = S.rounding_level(np.diag(K64).max(), 300, "float32")
    assert np.linalg.norm(K32 - K64, 2) <= bound
    e32, e64 = np.linalg.eigvalsh(K32), np.linalg.eigvalsh(K64)
    assert np.abs(e32 - e64).max() <= bound
