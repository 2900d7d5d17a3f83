"""The vision-Transformer variant: front-end shapes and initialisation, gradients of the new parameters
against finite differences, the NTK from the engine the workflow uses against the exact engine, and
the standardised MNIST inputs it trains on."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tfconv import ModelSpec, make_synthetic, ntk_matrix
from tfconv.core.model import forward, init_params
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
