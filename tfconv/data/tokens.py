"""Generic token helpers shared by the real-data loaders (MNIST patches, text tokens).

`patchify` / `unpatchify` turn images into patch tokens and back, `normalize_tokens` rescales every
token to a fixed norm, `balanced_subset` draws a seeded class-balanced (and nested) subset.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

# --------------------------------------------------------------------------------------------
def patchify(images: np.ndarray, patch_size: int) -> np.ndarray:
    """Turn images ``(n, H, W)`` into tokens ``(n, d_s, d)`` (float64).

    uint8 pixels are scaled to [0, 1] by 1/255 (float input must already lie in [0, 1]).
    Non-overlapping ``patch_size x patch_size`` patches become tokens in row-major patch order
    (token ``i * (W // p) + j`` is the patch at block row ``i``, block column ``j``); each patch's
    pixels are flattened row-major into ``d = p * p`` features. For 28x28 MNIST and ``p = 7``:
    16 tokens of 49 features.
    """
    x = np.asarray(images)
    if x.ndim != 3:
        raise ValueError(f"patchify expects images of shape (n, H, W), got {x.shape}")
    p = int(patch_size)
    n, h, w = x.shape
    if p <= 0 or h % p or w % p:
        raise ValueError(
            f"patch_size {patch_size} must divide the image size {h}x{w} (for MNIST: 28 % patch_size == 0, "
            "i.e. patch_size in 1, 2, 4, 7, 14, 28)"
        )
    if x.dtype == np.uint8:
        x = x.astype(np.float64) / 255.0
    elif np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
        if x.size and (x.min() < 0.0 or x.max() > 1.0):
            raise ValueError("float images given to patchify must lie in [0, 1]")
    else:
        raise TypeError(f"patchify expects uint8 or float images, got {x.dtype}")
    tokens = x.reshape(n, h // p, p, w // p, p).transpose(0, 1, 3, 2, 4)
    return np.ascontiguousarray(tokens.reshape(n, (h // p) * (w // p), p * p))


def unpatchify(tokens: np.ndarray, patch_size: int, image_shape: Sequence[int] = (28, 28)) -> np.ndarray:
    """Inverse of :func:`patchify` (up to the 1/255 scaling): ``(n, d_s, d)`` -> ``(n, H, W)``."""
    t = np.asarray(tokens)
    p = int(patch_size)
    h, w = (int(v) for v in image_shape)
    if t.ndim != 3 or t.shape[1:] != ((h // p) * (w // p), p * p) or h % p or w % p:
        raise ValueError(f"tokens of shape {t.shape} do not match patch_size {p} and image {h}x{w}")
    return t.reshape(t.shape[0], h // p, w // p, p, p).transpose(0, 1, 3, 2, 4).reshape(-1, h, w)


def normalize_tokens(x: np.ndarray, token_norm: float | None) -> np.ndarray:
    """Rescale every token (last-axis row) to Euclidean norm ``token_norm``; zero rows stay zero.

    ``token_norm=None`` returns ``x`` unchanged (as float64).
    """
    x = np.asarray(x, dtype=np.float64)
    if token_norm is None:
        return x
    token_norm = float(token_norm)
    if not np.isfinite(token_norm) or token_norm <= 0:
        raise ValueError(f"token_norm must be a positive float or None, got {token_norm}")
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    scale = np.divide(token_norm, norms, out=np.zeros_like(norms), where=norms > 0)
    return x * scale


def balanced_subset(labels: np.ndarray, n: int, classes: Iterable[int], seed: int) -> np.ndarray:
    """Seeded, class-balanced subset of ``n`` indices into ``labels``.

    Each class gets ``n // C`` samples; when ``C`` does not divide ``n`` the first ``n % C``
    classes (in the order given) get one more. Per class, a permutation seeded by
    ``(seed, class)`` is drawn and its prefix is taken, so the choice within a class does not
    depend on the other classes and subsets are nested: a larger ``n`` with the same seed contains
    the smaller one when ``C`` divides both. The returned int64 indices are shuffled by a
    permutation seeded by ``seed`` (so classes are interleaved). Raises ValueError if a class has
    too few samples.
    """
    labels = np.asarray(labels)
    classes = [int(c) for c in classes]
    if not classes:
        raise ValueError("classes must not be empty")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes contain duplicates: {classes}")
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    per, extra = divmod(n, len(classes))
    chosen = []
    for k, c in enumerate(classes):
        want = per + (1 if k < extra else 0)
        idx = np.flatnonzero(labels == c)
        if idx.size < want:
            raise ValueError(
                f"balanced_subset: class {c} has only {idx.size} samples but {want} are needed "
                f"for n={n} over {len(classes)} classes"
            )
        rng = np.random.default_rng([seed, c % (1 << 63)])
        chosen.append(idx[rng.permutation(idx.size)[:want]])
    out = np.concatenate(chosen).astype(np.int64) if chosen else np.zeros(0, np.int64)
    return out[np.random.default_rng(seed).permutation(out.size)]


