"""The model of science.md section 1, its initialisation table (section 2) and its width scaling.

Every expected value here comes from science.md or from an independent computation (a numpy loop,
finite differences, a sample-variance formula), never from the code under test.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from tfconv.data import make_synthetic
from tfconv.core.model import (
    INIT_SCHEMES,
    ModelSpec,
    ShallowTransformer,
    attention,
    attention_deviation,
    forward,
    init_params,
)
from tfconv.core.train import loss_fn

torch.set_num_threads(2)

TOL = {
    # Central differences in float64 with step h: truncation error ~ h^2 |L'''| / 6 ~ 1e-12 and
    # rounding error ~ eps |L| / h ~ 1e-16 / 1e-6 = 1e-10 (relative).  1e-6 is far above both and far
    # below any real gradient error (a wrong factor or a missing term is O(1) relative).
    "fd_step": 1e-6,
    "fd_rel": 1e-6,
    # Independent numpy forward vs the torch forward, both float64: only summation order differs.
    "naive_rel": 1e-12,
    # NTK parameterisation vs LeCun with the same seed: the same function up to float64 rounding
    # (theta_ntk = sqrt(fan_in) * theta_lecun entrywise and the multipliers undo it exactly, up to
    # the rounding of sqrt and of the products).
    "ntk_vs_lecun_rel": 1e-12,
    # Sample variance of n i.i.d. Gaussians: relative standard error sqrt(2 / (n - 1)).  We allow
    # 5 standard errors (a false failure has probability < 1e-6 per matrix); the smallest matrix
    # (Wq, 256 x 64 = 16384 entries) gives 5 * 0.011 = 0.055.  The sample mean has standard error
    # sqrt(var / n); allowed 5 of them.
    "var_sigmas": 5.0,
    # f(X) = O(1) at init: RMS over samples and seeds in [0.01, 10] and max |f| <= 20; see the test.
    "f_rms": (0.01, 10.0),
    "f_max": 20.0,
    # RMS of f at width 4096 over RMS at width 16: O(1) means no trend with width; a missing
    # tau1 = width^-1/2 under NTK init would give a ratio of 16, a 1/width too many 1/16.
    "f_width_ratio": (1 / 3, 3.0),
    # log-log slope of mean |A - 1/d_s| against width, 8 seeds x 32 samples x 16 entries per width:
    # the seed-to-seed spread of the per-width means is a few %, which moves a slope fitted over
    # log(4096/16) = 5.5 by ~0.02; +-0.1 leaves a wide margin but still separates -0.5 from 0.
    "att_slope": 0.1,
}

INITS = ("lecun", "he", "ntk")
TAU0S = ("inv_sqrt", "inv", 0.7)
WIDTHS = (16, 64, 256, 1024, 4096)


def small_problem(width=8, d=3, d_s=3, n_outputs=1, scaling="inv_sqrt", init="lecun", hidden=True,
                  n=5, seed=0, token_norm=None):
    """float64 spec, params and data; tokens of norm sqrt(d) so that f(X) = O(1) (see below)."""
    spec = ModelSpec(width=width, d=d, d_s=d_s, n_outputs=n_outputs, scaling=scaling, init=init,
                     hidden=hidden, dtype="float64")
    params = init_params(spec, seed)
    ds = make_synthetic(n, d_s=d_s, d=d, n_outputs=n_outputs,
                        token_norm=math.sqrt(d) if token_norm is None else token_norm, seed=seed + 100)
    return spec, params, torch.as_tensor(ds.X), torch.as_tensor(ds.y)


# ----------------------------------------------------------------------------------------------
# The forward pass against an independent implementation written from science.md section 1
# ----------------------------------------------------------------------------------------------

def naive_forward(params, X, spec):
    """Eq. 1.2 with explicit loops over samples and tokens, in numpy, from science.md + the table."""
    P = {k: v.detach().numpy() for k, v in params.items()}
    w, d = spec.width, spec.d
    tau0 = {"inv_sqrt": w ** -0.5, "inv": 1.0 / w}.get(spec.scaling, spec.scaling)
    ntk = spec.init == "ntk"
    m_qkv, m_h, tau1 = (d ** -0.5, w ** -0.5, w ** -0.5) if ntk else (1.0, 1.0, 1.0)
    out = np.zeros((X.shape[0], spec.n_outputs))
    for n, x in enumerate(X.numpy()):
        Q = m_qkv * x @ P["Wq"].T
        K = m_qkv * x @ P["Wk"].T
        V = m_qkv * x @ P["Wv"].T
        pooled = np.zeros(w)
        for t in range(spec.d_s):
            logits = np.array([tau0 * Q[t] @ K[s] for s in range(spec.d_s)])
            a = np.exp(logits - logits.max())
            a /= a.sum()
            z = sum(a[s] * V[s] for s in range(spec.d_s))
            if spec.hidden:
                z = m_h * P["Wh"] @ z
            pooled += np.maximum(z, 0.0) / spec.d_s
        out[n] = tau1 * pooled @ P["wo"]
    return out


@pytest.mark.parametrize("init,scaling,hidden,C", [
    ("lecun", "inv_sqrt", True, 1), ("he", "inv", False, 3), ("ntk", 0.7, True, 3), ("ntk", "inv", False, 1),
])
def test_forward_matches_naive_loop(init, scaling, hidden, C):
    spec, params, X, _ = small_problem(width=7, d=4, d_s=5, n_outputs=C, scaling=scaling, init=init,
                                       hidden=hidden, n=4)
    f = forward(params, X, spec.scales()).numpy()
    ref = naive_forward(params, X, spec)
    assert f.shape == (4, C)
    np.testing.assert_allclose(f, ref, rtol=0, atol=TOL["naive_rel"] * np.abs(ref).max())
    # The module wrapper is the same function.
    module = ShallowTransformer(spec, seed=0)
    np.testing.assert_array_equal(module(X).detach().numpy(), f)


def test_attention_rows_are_distributions():
    spec, params, X, _ = small_problem(width=16, d=4, d_s=6, n=3, token_norm=3.0)
    A = attention(params, X, spec.scales())
    assert A.shape == (3, 6, 6)
    assert torch.all(A > 0)
    np.testing.assert_allclose(A.sum(-1).numpy(), 1.0, rtol=0, atol=1e-14)
    # Uniform attention has zero deviation; a one-hot row (d_s = 2) has mean deviation 1/2.
    assert attention_deviation(torch.full((2, 4, 4), 0.25)) == (0.0, 0.0)
    assert attention_deviation(torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])) == (0.5, 0.5)


# ----------------------------------------------------------------------------------------------
# Gradients of the training loss against central finite differences
# ----------------------------------------------------------------------------------------------

GRAD_GRID = list(itertools.product(INITS, TAU0S, [True, False], [1, 3]))


@pytest.mark.parametrize("init,scaling,hidden,C", GRAD_GRID)
def test_loss_gradient_matches_finite_differences(init, scaling, hidden, C):
    spec, params, X, y = small_problem(n_outputs=C, scaling=scaling, init=init, hidden=hidden)
    scales = spec.scales()
    names = list(params)
    reduction = "mean" if C == 1 else "sum"

    def L(p):
        return loss_fn(forward(p, X, scales), y, reduction)

    theta = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    grads = dict(zip(names, torch.autograd.grad(L(theta), [theta[k] for k in names])))
    gnorm = math.sqrt(sum(float((g ** 2).sum()) for g in grads.values()))
    assert gnorm > 1e-3  # the check below is not vacuous
    h = TOL["fd_step"]

    def central(direction):
        plus = {k: params[k] + h * direction[k] for k in names}
        minus = {k: params[k] - h * direction[k] for k in names}
        return float(L(plus) - L(minus)) / (2 * h)

    # Directional derivatives along random unit directions (all weights at once).
    gen = torch.Generator().manual_seed(7)
    for _ in range(3):
        v = {k: torch.randn(params[k].shape, generator=gen, dtype=torch.float64) for k in names}
        vn = math.sqrt(sum(float((t ** 2).sum()) for t in v.values()))
        v = {k: t / vn for k, t in v.items()}
        analytic = sum(float((grads[k] * v[k]).sum()) for k in names)
        assert abs(central(v) - analytic) <= TOL["fd_rel"] * gnorm, (central(v), analytic)

    # Per-entry checks: the largest-gradient entry and one fixed entry of every weight matrix.
    for k in names:
        flat = grads[k].reshape(-1)
        for idx in {int(flat.abs().argmax()), flat.numel() // 2}:
            e = {j: torch.zeros_like(params[j]) for j in names}
            e[k].view(-1)[idx] = 1.0
            assert abs(central(e) - float(flat[idx])) <= TOL["fd_rel"] * gnorm, (k, idx)


# ----------------------------------------------------------------------------------------------
# Initialisation table (science.md section 2)
# ----------------------------------------------------------------------------------------------

# (var Wq/Wk/Wv, var Wh, var wo) as functions of (d, width), copied from science.md's table.
TABLE = {
    "lecun": (lambda d, w: 1 / d, lambda d, w: 1 / w, lambda d, w: 1 / w),
    "he": (lambda d, w: 2 / d, lambda d, w: 2 / w, lambda d, w: 2 / w),
    "ntk": (lambda d, w: 1.0, lambda d, w: 1.0, lambda d, w: 1.0),
}


@pytest.mark.parametrize("init", INITS)
def test_init_variances_match_table(init):
    width, d = 256, 64
    spec = ModelSpec(width=width, d=d, d_s=2, n_outputs=3, init=init, dtype="float64")
    params = init_params(spec, seed=3)
    v_qkv, v_h, v_o = (f(d, width) for f in TABLE[init])
    expected = {"Wq": v_qkv, "Wk": v_qkv, "Wv": v_qkv, "Wh": v_h, "wo": v_o}
    assert set(params) == set(expected)
    assert INIT_SCHEMES[init].ntk_param == (init == "ntk")
    k = TOL["var_sigmas"]
    for name, var in expected.items():
        w = params[name].numpy().ravel()
        n = w.size
        assert abs(w.var(ddof=1) / var - 1) <= k * math.sqrt(2 / (n - 1)), (name, w.var(), var)
        assert abs(w.mean()) <= k * math.sqrt(var / n), name
    # Distinct matrices are independent draws (not one matrix reused).
    assert not torch.equal(params["Wq"], params["Wk"])
    assert not torch.equal(params["Wk"], params["Wv"])


@pytest.mark.parametrize("init", INITS)
def test_multipliers_and_tau1(init):
    width, d = 100, 16
    # width^-1/2, token_dim^-1/2 (token_dim = d without an embedding), width^-1/2, d^-1/2
    expected_ntk = {"tau1": 0.1, "m_qkv": 0.25, "m_h": 0.1, "m_e": 0.25}
    expected_std = {"tau1": 1.0, "m_qkv": 1.0, "m_h": 1.0, "m_e": 1.0}
    for scaling, tau0 in (("inv_sqrt", 0.1), ("inv", 0.01), (0.3, 0.3)):
        s = ModelSpec(width=width, d=d, d_s=2, init=init, scaling=scaling).scales()
        exp = dict(expected_ntk if init == "ntk" else expected_std, tau0=tau0)
        assert set(s) == set(exp)
        for key, val in exp.items():
            assert s[key] == pytest.approx(val, rel=1e-15), (key, s[key], val)


def test_ntk_init_is_the_lecun_function():
    """Same seed: NTK weights are sqrt(fan_in) x LeCun weights and the multipliers undo it."""
    for hidden, C in ((True, 1), (False, 3)):
        spec_l, p_l, X, _ = small_problem(width=32, d=5, d_s=4, n_outputs=C, init="lecun", hidden=hidden)
        spec_n, p_n, _, _ = small_problem(width=32, d=5, d_s=4, n_outputs=C, init="ntk", hidden=hidden)
        f_l = forward(p_l, X, spec_l.scales())
        f_n = forward(p_n, X, spec_n.scales())
        assert float(f_l.abs().max()) > 1e-3
        np.testing.assert_allclose(f_n.numpy(), f_l.numpy(), rtol=0,
                                   atol=TOL["ntk_vs_lecun_rel"] * float(f_l.abs().max()))


def test_init_is_seeded_and_dtype_independent():
    spec64 = ModelSpec(width=16, d=4, d_s=3, dtype="float64")
    spec32 = ModelSpec(width=16, d=4, d_s=3, dtype="float32")
    a, b, c = init_params(spec64, 5), init_params(spec64, 5), init_params(spec64, 6)
    p32 = init_params(spec32, 5)
    for k in a:
        assert a[k].numpy().tobytes() == b[k].numpy().tobytes()
        assert not torch.equal(a[k], c[k])
        assert p32[k].dtype == torch.float32
        assert torch.equal(p32[k], a[k].to(torch.float32))


# ----------------------------------------------------------------------------------------------
# f(X) = O(1) at initialisation, every scheme, widths 16 .. 4096
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("init", INITS)
def test_output_is_order_one_at_init(init):
    """Variance bound (LeCun; tokens x of norm r; A a row-stochastic matrix):

        V = X Wv^T:   Var V_tk = r^2 / d            (AV)_tk: a convex combination, Var <= r^2 / d
        Z = (AV) Wh^T: Var Z_tj = |(AV)_t|^2 / width ~ q <= r^2 / d
        E relu(Z)^2 = q / 2;  pooled = mean over tokens, E pooled^2 <= q / 2
        f = pooled . wo: Var f = |pooled|^2 / width <= r^2 / (2 d)

    He doubles each of the three variances: Var f <= 4 r^2 / d.  NTK init is the LeCun function
    (see test_ntk_init_is_the_lecun_function).  With r = sqrt(d) (our data here), the RMS of f is
    at most sqrt(4) = 2 for every scheme and every width.  From below, averaging over d_s tokens
    with near-uniform attention shrinks q by at most d_s and E pooled^2 >= (E relu)^2 = q / (2 pi),
    so RMS f >~ sqrt(1 / (2 pi d_s)) ~ 0.2 here.  We allow [0.01, 10] for the RMS (a 20x / 5x
    margin for 32 samples x 2 seeds), and max |f| <= 20 (10 standard deviations).
    Unit-norm tokens (the synthetic default) would give RMS ~ d^-1/2: still O(1) in width.
    """
    d, d_s, n, seeds = 4, 4, 16, (0, 1)
    rms = []
    for width in WIDTHS:
        spec = ModelSpec(width=width, d=d, d_s=d_s, init=init, hidden=True, dtype="float32")
        vals = []
        for seed in seeds:
            params = init_params(spec, seed)
            X = make_synthetic(n, d_s=d_s, d=d, token_norm=math.sqrt(d), seed=50 + seed).X
            with torch.no_grad():
                f = forward(params, torch.as_tensor(X, dtype=torch.float32), spec.scales())
            vals.append(f.numpy().ravel())
            del params
        vals = np.concatenate(vals)
        assert np.all(np.isfinite(vals))
        r = float(np.sqrt(np.mean(vals ** 2)))
        lo, hi = TOL["f_rms"]
        assert lo <= r <= hi, (init, width, r)
        assert np.abs(vals).max() <= TOL["f_max"], (init, width, np.abs(vals).max())
        rms.append(r)
    lo, hi = TOL["f_width_ratio"]
    assert lo <= rms[-1] / rms[0] <= hi, (init, rms)


# ----------------------------------------------------------------------------------------------
# Attention deviation from uniform against width (science.md section 3, derived facts)
# ----------------------------------------------------------------------------------------------

def attention_deviation_slope(scaling, seeds=range(8), n=32, d=4, d_s=4):
    devs = []
    for width in WIDTHS:
        spec = ModelSpec(width=width, d=d, d_s=d_s, scaling=scaling, hidden=False, dtype="float64")
        per_seed = []
        for seed in seeds:
            params = init_params(spec, seed)
            X = torch.as_tensor(make_synthetic(n, d_s=d_s, d=d, seed=200 + seed).X)
            with torch.no_grad():
                per_seed.append(attention_deviation(attention(params, X, spec.scales()))[0])
        devs.append(np.mean(per_seed))
    return float(np.polyfit(np.log(WIDTHS), np.log(devs), 1)[0]), devs


@pytest.mark.parametrize("scaling,slope", [("inv", -0.5), ("inv_sqrt", 0.0)])
def test_attention_deviation_width_slope(scaling, slope):
    """Var(logit) = tau0^2 * width * var(Wq) var(Wk) |x_i|^2 |x_j|^2 (LeCun: var = 1/d).

    Unit-norm tokens (make_synthetic's default), d = 4: the logit std is tau0 sqrt(width) / d, i.e.
    1/4 under tau0 = width^-1/2 (any width) and 1/(4 sqrt(width)) <= 1/16 under tau0 = 1/width.
    Logits are small, so A - 1/d_s is linear in them and mean |A - 1/d_s| is proportional to the
    logit std: slope -1/2 under "inv", 0 under "inv_sqrt".  (Tokens of norm sqrt(d) would put the
    inv_sqrt logits at std 1, where the slope is still 0 but the deviation is no longer linear.)
    """
    measured, devs = attention_deviation_slope(scaling)
    assert abs(measured - slope) <= TOL["att_slope"], (scaling, measured, devs)


# ----------------------------------------------------------------------------------------------
# ModelSpec validation
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,field", [
    (dict(width=0), "width"),
    (dict(width=2.5), "width"),
    (dict(width=True), "width"),
    (dict(d=-1), "d"),
    (dict(d_s=0), "d_s"),
    (dict(n_outputs=0), "n_outputs"),
    (dict(scaling="sqrt"), "scaling"),
    (dict(scaling=-1.0), "scaling"),
    (dict(scaling=0), "scaling"),
    (dict(scaling=True), "scaling"),
    (dict(init="xavier"), "init"),
    (dict(dtype="float16"), "dtype"),
])
def test_model_spec_rejects_bad_values(kwargs, field):
    base = dict(width=8, d=4, d_s=3)
    base.update(kwargs)
    with pytest.raises(ValueError, match=rf"ModelSpec\.{field}\b"):
        ModelSpec(**base)


def test_model_spec_shapes():
    spec = ModelSpec(width=8, d=4, d_s=3, n_outputs=2)
    assert spec.param_shapes() == {"Wq": (8, 4), "Wk": (8, 4), "Wv": (8, 4), "Wh": (8, 8), "wo": (8, 2)}
    assert spec.n_params() == 3 * 32 + 64 + 16
    no_h = ModelSpec(width=8, d=4, d_s=3, n_outputs=2, hidden=False)
    assert "Wh" not in no_h.param_shapes() and "Wh" not in init_params(no_h, 0)
    assert no_h.n_params() == 3 * 32 + 16
