"""The vision-Transformer variant: front-end shapes and initialisation, gradients of the new parameters
against finite differences, the NTK from the engine the workflow uses against the exact engine, and
the standardised MNIST inputs it trains on."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tfconv import ModelSpec, make_synthetic, ntk_matrix
from tfconv.core.model import embed_tokens, forward, init_params
from tfconv.core.ntk import ntk_block


def _spec(**kw):
    base = dict(width=32, d=12, d_s=5, n_outputs=3, embed=8, positional=True, dtype="float64")
    base.update(kw)
    return ModelSpec(**base)


def test_front_end_shapes_and_the_paper_model_unchanged():
    spec = _spec(class_token=True)
    p = init_params(spec, 0)
    assert p["We"].shape == (8, 12) and p["pos"].shape == (5, 8) and p["cls"].shape == (1, 8)
    assert p["Wq"].shape == (32, 8)  # the encoder sees e = 8 features per token
    assert spec.n_tokens == 6 and spec.token_dim == 8 and spec.vit
    # without the front end the draws are those of the paper's model (same seed, same numbers)
    plain = ModelSpec(width=32, d=12, d_s=5, dtype="float64")
    assert not plain.vit and set(init_params(plain, 3)) == {"Wq", "Wk", "Wv", "Wh", "wo"}
    with pytest.raises(ValueError, match="embed"):
        ModelSpec(width=4, d=3, d_s=2, embed=-1)


@pytest.mark.parametrize("init", ["lecun", "he", "ntk"])
def test_output_is_order_one_at_init(init):
    """With inputs of order 1 (standardised pixels, or tokens of norm sqrt(d)), f(X) = O(1) for every init."""
    data = make_synthetic(64, d_s=5, d=12, n_outputs=3, seed=0)
    spec = _spec(init=init, width=512)
    out = forward(init_params(spec, 0), torch.as_tensor(data.X), spec.scales())
    assert 0.05 < float(out.std()) < 5.0, float(out.std())


@pytest.mark.parametrize("name", ["We", "pos", "cls"])
def test_front_end_gradients_match_finite_differences(name):
    spec = _spec(class_token=True, n_outputs=1, width=16)
    data = make_synthetic(3, d_s=5, d=12, seed=1)
    X = torch.as_tensor(data.X)
    p = {k: v.clone().requires_grad_(True) for k, v in init_params(spec, 2).items()}
    f = forward(p, X, spec.scales()).sum()
    (g,) = torch.autograd.grad(f, [p[name]])
    rng = np.random.default_rng(0)
    direction = torch.as_tensor(rng.standard_normal(p[name].shape))
    eps = 1e-6
    with torch.no_grad():
        plus = {k: (v + eps * direction if k == name else v) for k, v in p.items()}
        minus = {k: (v - eps * direction if k == name else v) for k, v in p.items()}
        fd = (forward(plus, X, spec.scales()).sum() - forward(minus, X, spec.scales()).sum()) / (2 * eps)
    # central differences in float64: error O(eps^2) plus rounding O(1e-16 / eps) ~ 1e-10 relative
    assert float((g * direction).sum()) == pytest.approx(float(fd), rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("kw", [dict(), dict(positional=False), dict(embed=0), dict(class_token=True)],
                         ids=["embed+positions", "embed", "positions", "class-token"])
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-10), ("float32", 2e-4)])
def test_workflow_engine_equals_the_exact_engine(kw, dtype, rtol):
    """The structured engine (encoder) plus exact front-end Jacobians equals the exact engine; with a
    class token the workflow's engine is the exact one.  Tolerances: float64 rounding; float32 blocks
    summed in another order (the engines share no code path for the encoder)."""
    spec = _spec(dtype=dtype, **kw)
    data = make_synthetic(10, d_s=5, d=12, n_outputs=3, seed=4)
    p = init_params(spec, 5)
    K_struct = ntk_matrix(p, spec, data.X, engine="structured", chunk_size=4)
    K_exact = ntk_matrix(p, spec, data.X, engine="exact", chunk_size=4)
    np.testing.assert_allclose(K_struct, K_exact, rtol=rtol, atol=rtol * np.abs(K_exact).max())
    # an off-diagonal block on its own (what one Dask task computes) matches the whole matrix
    blk = ntk_block(p, spec, data.X[:4], data.X[4:], engine="structured", chunk_size=3)
    np.testing.assert_allclose(blk, K_struct[:4, 4:], rtol=rtol, atol=rtol * np.abs(K_exact).max())


def test_mnist_pixels_are_standardised_with_training_statistics():
    from tfconv.data.mnist import make_mnist

    std = make_mnist(n_train=100, n_test=50, patch_size=7, seed=0)
    raw = make_mnist(n_train=100, n_test=50, patch_size=7, seed=0, pixels="raw")
    X, Xr = std["X_train"], raw["X_train"]
    varying = Xr.std(axis=0) > 0
    np.testing.assert_allclose(X.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(X.std(axis=0)[varying], 1.0, rtol=1e-9)
    assert np.all(X[:, ~varying] == 0)  # pixels constant over the training subset (borders) become 0
    # the test subset uses the training statistics (not its own)
    mu, sd = Xr.mean(axis=0), np.where(Xr.std(axis=0) > 0, Xr.std(axis=0), 1.0)
    np.testing.assert_allclose(std["X_test"], (raw["X_test"] - mu) / sd, atol=1e-12)
    assert raw["meta"]["pixels"] == "raw" and std["meta"]["pixels"] == "standardized"


# ----------------------------------------------------------------------------------------------
# The front end is scheme-independent, so He's deviation from LeCun is the encoder table's alone
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [dict(), dict(class_token=True), dict(hidden=False)],
                         ids=["embed+positions", "class-token", "no-hidden"])
def test_front_end_is_the_same_under_every_scheme(kw):
    """For one seed the three schemes feed the encoder the same tokens, and He's f(X) is exactly
    2 sqrt(2) times LeCun's f(X) at twice LeCun's tau0 (2 without the hidden layer).

    Why: He draws Wq, Wk, Wv, Wh, wo from the same normals as LeCun, times sqrt(2) (variance 2/fan_in
    against 1/fan_in, science.md section 2), so Q K^T doubles (tau0 -> 2 tau0), V gains sqrt(2), Wh
    and wo sqrt(2) each, and relu is positively homogeneous.  The identity holds only if the front
    end (We, pos, cls) is the same under both: a front end that followed He's doubling (as it did
    until issue 22) makes the tokens, and so the output, larger than this.  Tolerances: float64
    rounding of sqrt(2/fan_in) against sqrt(2) sqrt(1/fan_in) and of the products (1e-12 relative);
    NTK init is the LeCun function up to the same rounding.
    """
    data = make_synthetic(20, d_s=5, d=12, n_outputs=3, token_norm=12 ** 0.5, seed=7)
    X = torch.as_tensor(data.X)
    for width in (16, 256):
        for tau0 in (width ** -0.5, 1.0 / width):
            lecun, he, ntk = (_spec(width=width, init=i, scaling=tau0 * (2 if i == "lecun" else 1), **kw)
                              for i in ("lecun", "he", "ntk"))
            p_l, p_h, p_n = init_params(lecun, 3), init_params(he, 3), init_params(ntk, 3)
            with torch.no_grad():
                T_l = embed_tokens(p_l, X, lecun.scales())
                T_h = embed_tokens(p_h, X, he.scales())
                T_n = embed_tokens(p_n, X, ntk.scales())
                f_l, f_h = forward(p_l, X, lecun.scales()), forward(p_h, X, he.scales())
            assert torch.equal(T_h, T_l)  # the same draws with the same variance: bitwise
            np.testing.assert_allclose(T_n.numpy(), T_l.numpy(), rtol=1e-12, atol=1e-12 * float(T_l.abs().max()))
            factor = 2 * 2 ** 0.5 if lecun.hidden else 2.0
            assert float(f_l.abs().max()) > 1e-3
            np.testing.assert_allclose(f_h.numpy(), factor * f_l.numpy(), rtol=1e-12,
                                       atol=1e-12 * float(f_h.abs().max()))


#: f(X) = O(1) at init on the `vit_mnist` inputs (see the test's docstring for each number).
VIT_O1 = {
    "widths": (16, 64, 256, 1024),
    "seeds": range(6),
    # seed-averaged std of f(X) (over samples and outputs): one-hot targets have entry std 0.3;
    # measured 0.21-0.51 (LeCun, NTK) and 0.60-1.81 (He); a width^(+-1/2) error over 16..1024 is 8x.
    "band": (0.1, 3.0),
    # largest over smallest seed-averaged std across the widths, per scheme and scaling: measured
    # <= 1.24 under inv_sqrt and <= 1.55 under inv (He: attention flattens as tau0 = 1/width shrinks).
    "width_ratio": 2.0,
    # He's over LeCun's seed-averaged std at each width: 2 sqrt(2) from the value path exactly
    # (test_front_end_is_the_same_under_every_scheme) times the effect of He's doubled logits on
    # the averaging over tokens, measured 1.00-1.27; with the old He-scaled patch embedding the ratio
    # was 5.1-5.7 under inv_sqrt.
    "he_over_lecun": (2 * 2 ** 0.5 / 1.1, 2 * 2 ** 0.5 * 2 ** 0.5),
}


@pytest.fixture(scope="module")
def mnist_inputs():
    """The default config's `datasets.mnist` training inputs: 200 class-balanced images, standardised
    pixels, 7x7 patches (16 tokens of 49 features), one-hot targets over 10 classes."""
    from tfconv.data.mnist import make_mnist

    out = make_mnist(n_train=200, n_test=10, patch_size=7, seed=0)
    return torch.as_tensor(out["X_train"], dtype=torch.float32), out["y_train"].shape[1]


@pytest.mark.parametrize("scaling", ["inv_sqrt", "inv"])
def test_vit_output_is_order_one_at_init_on_mnist(mnist_inputs, scaling):
    """The `vit_mnist` model (embed 32, learned positions, float32) at init on its own inputs: the std
    of f(X) is O(1) for every scheme at widths 16..1024 and does not trend with width, and He's is
    LeCun's times what the encoder table alone explains.

    Expected sizes (science.md section 2 table; tokens of entry variance |x|^2/d + 1 = 1.7 for
    standardised pixels plus positions, the same under every scheme): Var f <~ c_v c_h c_o t^2 / 2
    with c = 1 (LeCun) or 2 (He), i.e. std <~ 0.9 (LeCun, NTK) and 2.6 (He), less when attention
    averages over tokens.  Each number is the mean over 6 seeds of the std over 200 samples x 10
    outputs; the per-seed spread is about 20% (one seed gave the issue's "L_0 = 31.5 at width 64,
    41.2 at width 256": noise, not growth), so the mean has ~8% error, well inside every limit.
    """
    X, C = mnist_inputs
    std = {}
    for init in ("lecun", "he", "ntk"):
        for width in VIT_O1["widths"]:
            spec = ModelSpec(width=width, d=X.shape[2], d_s=X.shape[1], n_outputs=C, scaling=scaling, init=init,
                             embed=32, positional=True, dtype="float32")
            vals = []
            for seed in VIT_O1["seeds"]:
                with torch.no_grad():
                    f = forward(init_params(spec, seed), X, spec.scales())
                assert torch.isfinite(f).all()
                vals.append(float(f.std()))
            std[init, width] = float(np.mean(vals))
    lo, hi = VIT_O1["band"]
    for init in ("lecun", "he", "ntk"):
        per_width = [std[init, w] for w in VIT_O1["widths"]]
        assert all(lo <= s <= hi for s in per_width), (init, per_width)
        assert max(per_width) / min(per_width) <= VIT_O1["width_ratio"], (init, per_width)
    lo, hi = VIT_O1["he_over_lecun"]
    ratios = [std["he", w] / std["lecun", w] for w in VIT_O1["widths"]]
    assert all(lo <= r <= hi for r in ratios), ratios
