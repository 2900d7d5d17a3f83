"""The one-layer encoder-only Transformer of Wu et al. (NeurIPS 2023, Eq. 1.2), in one readable file.

    Q = m_qkv X Wq^T,  K = m_qkv X Wk^T,  V = m_qkv X Wv^T     Wq, Wk, Wv: (width, d)
    A = softmax_rows(tau0 * Q K^T)                              (d_s, d_s) attention matrix
    H = relu(m_h (A V) Wh^T)                                    Wh: (width, width); skipped when hidden=False
    f(X) = tau1 * mean_over_tokens(H) @ wo                      wo: (width, n_outputs)

No residuals, no LayerNorm, no biases, one head; every weight is trained.

The vision-Transformer variant (``ModelSpec.embed``, ``positional``, ``class_token``; off by default)
puts a learned front end before the same encoder (our ViT: the paper's exact set-up is not known):

    X <- m_e X We^T                        We: (embed, d)     learned linear patch embedding
    X <- X + P                             P: (d_s, e)        learned positional embeddings
    X <- [c; X]                            c: (e,)            learned class token (pooling reads it)
    f(X) = tau1 * H[class token] @ wo      (instead of the mean over tokens)

with e = embed (or d without embedding); the encoder's query/key/value weights then have fan-in e.  The multipliers
m_qkv, m_h and tau1 are 1 under the standard parameterisation (LeCun, He) and 1/sqrt(fan_in)
under the NTK parameterisation (see `INIT_SCHEMES`).  The front end is initialised the same way under
every scheme (`FRONT_END_STD`: We with variance 1/d, or 1 with m_e = d^-1/2 under NTK; P and c with
variance 1), so only the encoder follows the scheme and, for one seed, He's output is exactly
2 sqrt(2) times LeCun's at twice LeCun's tau0 (Wq, Wk, Wv, Wh, wo are sqrt(2) times LeCun's draws).
The model is written *functionally*:
parameters live in a plain dict of tensors so that the same `forward` serves training, the exact
NTK (torch.func.jacrev), and the vectorised training of several runs (tfconv.core.train_vectorised, batched einsums).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, Mapping, Union

import torch

Params = Dict[str, torch.Tensor]

#: Names of the weight matrices, in the fixed order used for initialisation, flattening and records
#: (We: patch embedding, pos: positional embeddings, cls: class token -- the ViT variant only).
PARAM_NAMES = ("We", "pos", "cls", "Wq", "Wk", "Wv", "Wh", "wo")
#: The parameters of the encoder proper (what the structured NTK engine contracts).
ENCODER_PARAMS = ("Wq", "Wk", "Wv", "Wh", "wo")

#: Allowed names for the softmax scaling tau0 (a positive number is allowed too).
SCALINGS = ("inv_sqrt", "inv")


@dataclass(frozen=True)
class InitScheme:
    """One row of the initialisation table (science.md section 2).

    Variances are of the i.i.d. Gaussian entries; `ntk_param` switches on the 1/sqrt(fan_in)
    multipliers in the forward pass and tau1 = width^-1/2.
    """

    var_qkv: str  # variance of Wq, Wk, Wv entries, as a formula in d
    var_h: str  # variance of Wh entries, as a formula in width
    var_o: str  # variance of wo entries, as a formula in width
    ntk_param: bool
    description: str


#: The one table of initialisation schemes.  Formulas are evaluated with `d` and `width` bound.
INIT_SCHEMES: Mapping[str, InitScheme] = {
    "lecun": InitScheme("1/d", "1/width", "1/width", False, "LeCun: var 1/fan_in, tau1 = 1"),
    "he": InitScheme("2/d", "2/width", "2/width", False, "He: var 2/fan_in, tau1 = 1"),
    "ntk": InitScheme(
        "1", "1", "1", True,
        "NTK: var 1, 1/sqrt(fan_in) multiplier on every layer, tau1 = width^-1/2",
    ),
}


#: Standard deviations of the ViT front end's entries as functions of (d, ntk_param): the same tokens
#: reach the encoder under every scheme (LeCun's 1/d for We; NTK draws var 1 and multiplies by
#: m_e = d^-1/2).  Only the encoder follows `INIT_SCHEMES` (the paper's table).
FRONT_END_STD = {
    "We": lambda d, ntk: 1.0 if ntk else math.sqrt(1.0 / d),  # = sqrt of LeCun's var_qkv at fan-in d
    "pos": lambda d, ntk: 1.0,
    "cls": lambda d, ntk: 1.0,
}


def _eval_formula(formula: str, d: int, width: int) -> float:
    return float(eval(formula, {"__builtins__": {}}, {"d": d, "width": width}))  # noqa: S307 (table above only)


@dataclass(frozen=True)
class ModelSpec:
    """Everything that defines the architecture and its parameterisation.

    width:      d_m, the embedding/hidden width.
    d:          features per token.   d_s: tokens per sample.
    n_outputs:  C, the number of outputs (1 for scalar regression, 10 for MNIST).
    scaling:    tau0, the softmax scaling: "inv_sqrt" (width^-1/2), "inv" (width^-1) or a positive number.
    init:       "lecun", "he" or "ntk" (rows of `INIT_SCHEMES`).
    hidden:     whether the width x width feed-forward layer Wh is present.
    dtype:      "float32" or "float64".
    embed:      0 (tokens enter the encoder as they are) or e > 0: a learned linear embedding d -> e.
    positional: learned positional embeddings added to the (embedded) tokens.
    class_token: a learned class token prepended; the output reads it instead of mean pooling.
    """

    width: int
    d: int
    d_s: int
    n_outputs: int = 1
    scaling: Union[str, float] = "inv_sqrt"
    init: str = "lecun"
    hidden: bool = True
    dtype: str = "float32"
    embed: int = 0
    positional: bool = False
    class_token: bool = False

    def __post_init__(self):
        if isinstance(self.embed, bool) or not isinstance(self.embed, int) or self.embed < 0:
            raise ValueError(f"ModelSpec.embed must be 0 (no embedding) or a positive integer, got {self.embed!r}")
        for key in ("width", "d", "d_s", "n_outputs"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"ModelSpec.{key} must be a positive integer, got {v!r}")
        if isinstance(self.scaling, str):
            if self.scaling not in SCALINGS:
                raise ValueError(
                    f"ModelSpec.scaling must be one of {list(SCALINGS)} or a positive number, got {self.scaling!r}"
                )
        elif isinstance(self.scaling, bool) or not isinstance(self.scaling, (int, float)) or not self.scaling > 0:
            raise ValueError(f"ModelSpec.scaling must be one of {list(SCALINGS)} or a positive number, got {self.scaling!r}")
        if self.init not in INIT_SCHEMES:
            raise ValueError(f"ModelSpec.init must be one of {list(INIT_SCHEMES)}, got {self.init!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"ModelSpec.dtype must be 'float32' or 'float64', got {self.dtype!r}")

    @property
    def vit(self) -> bool:
        """Whether the vision-Transformer front end (embedding, positions or class token) is on."""
        return bool(self.embed or self.positional or self.class_token)

    @property
    def token_dim(self) -> int:
        """e: the features per token the encoder sees (the embedding dimension, else d)."""
        return self.embed or self.d

    @property
    def n_tokens(self) -> int:
        """Tokens the encoder sees: d_s, plus one with a class token."""
        return self.d_s + int(self.class_token)

    def encoder_spec(self) -> "ModelSpec":
        """The spec of the encoder alone on embedded tokens (d = e, no front end)."""
        return ModelSpec(width=self.width, d=self.token_dim, d_s=self.n_tokens, n_outputs=self.n_outputs,
                         scaling=self.scaling, init=self.init, hidden=self.hidden, dtype=self.dtype)

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def tau0(self) -> float:
        if self.scaling == "inv_sqrt":
            return self.width ** -0.5
        if self.scaling == "inv":
            return 1.0 / self.width
        return float(self.scaling)

    @property
    def scheme(self) -> InitScheme:
        return INIT_SCHEMES[self.init]

    def scales(self) -> Dict[str, float]:
        """The scalar factors of the forward pass: tau0, tau1 and the layer multipliers."""
        ntk = self.scheme.ntk_param
        return {
            "tau0": self.tau0,
            "tau1": self.width ** -0.5 if ntk else 1.0,
            "m_qkv": self.token_dim ** -0.5 if ntk else 1.0,
            "m_h": self.width ** -0.5 if ntk else 1.0,
            "m_e": self.d ** -0.5 if ntk else 1.0,
        }

    def param_shapes(self) -> Dict[str, tuple]:
        e = self.token_dim
        shapes = {}
        if self.embed:
            shapes["We"] = (self.embed, self.d)
        if self.positional:
            shapes["pos"] = (self.d_s, e)
        if self.class_token:
            shapes["cls"] = (1, e)
        shapes.update({
            "Wq": (self.width, e),
            "Wk": (self.width, e),
            "Wv": (self.width, e),
            "Wh": (self.width, self.width),
            "wo": (self.width, self.n_outputs),
        })
        if not self.hidden:
            del shapes["Wh"]
        return shapes

    def n_params(self) -> int:
        return sum(math.prod(s) for s in self.param_shapes().values())

    def to_dict(self) -> dict:
        return asdict(self)


def init_params(spec: ModelSpec, seed: int) -> Params:
    """i.i.d. Gaussian initialisation following `INIT_SCHEMES[spec.init]`, reproducible from `seed`.

    Matrices are drawn in `PARAM_NAMES` order from one CPU generator, always in float64 and then
    cast, so that float32 and float64 runs of the same seed start from the same point (up to rounding).
    """
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    sch = spec.scheme
    e = spec.token_dim
    std = {
        # The ViT front end does not depend on the scheme: We has LeCun's variance 1/d (fan-in d) under
        # LeCun and He alike (a linear map with no ReLU after it has no use for He's factor 2), and
        # variance 1 with the multiplier m_e = d^-1/2 under NTK (the same function).  Positional
        # embeddings and the class token have entries of order 1 (like the embedded tokens) everywhere.
        # So the encoder sees the same tokens under every scheme (`FRONT_END_STD`, docs/model.md).
        "We": FRONT_END_STD["We"](spec.d, sch.ntk_param),
        "pos": FRONT_END_STD["pos"](spec.d, sch.ntk_param),
        "cls": FRONT_END_STD["cls"](spec.d, sch.ntk_param),
        "Wq": math.sqrt(_eval_formula(sch.var_qkv, e, spec.width)),
        "Wk": math.sqrt(_eval_formula(sch.var_qkv, e, spec.width)),
        "Wv": math.sqrt(_eval_formula(sch.var_qkv, e, spec.width)),
        "Wh": math.sqrt(_eval_formula(sch.var_h, e, spec.width)),
        "wo": math.sqrt(_eval_formula(sch.var_o, e, spec.width)),
    }
    shapes = spec.param_shapes()
    params: Params = {}
    for name in PARAM_NAMES:
        if name not in shapes:
            continue
        w = torch.randn(shapes[name], generator=gen, dtype=torch.float64) * std[name]
        params[name] = w.to(spec.torch_dtype)
    return params


def embed_tokens(params: Mapping[str, torch.Tensor], X: torch.Tensor, scales: Mapping[str, float]) -> torch.Tensor:
    """The ViT front end: patch embedding, positional embeddings, class token (each when present)."""
    if "We" in params:
        X = scales.get("m_e", 1.0) * (X @ params["We"].T)  # (N, d_s, e)
    if "pos" in params:
        X = X + params["pos"]
    if "cls" in params:
        X = torch.cat([params["cls"].expand(X.shape[0], 1, X.shape[-1]), X], dim=1)  # (N, 1 + d_s, e)
    return X


def attention(params: Mapping[str, torch.Tensor], X: torch.Tensor, scales: Mapping[str, float]) -> torch.Tensor:
    """Row-softmax attention matrices A, shape (N, d_s, d_s)."""
    Q = scales["m_qkv"] * (X @ params["Wq"].T)  # (N, d_s, width)
    K = scales["m_qkv"] * (X @ params["Wk"].T)  # (N, d_s, width)
    return torch.softmax(scales["tau0"] * (Q @ K.transpose(-1, -2)), dim=-1)  # (N, d_s, d_s)


def forward(
    params: Mapping[str, torch.Tensor],
    X: torch.Tensor,
    scales: Mapping[str, float],
    return_attention: bool = False,
):
    """f(X) for a batch X of shape (N, d_s, d); returns (N, n_outputs) [and A of shape (N, d_s, d_s)].

    Attention is written out (softmax of tau0 Q K^T), not a fused kernel, so every quantity the
    theory talks about is visible and differentiable.
    """
    X = embed_tokens(params, X, scales)  # the ViT front end (identity for the paper's model)
    A = attention(params, X, scales)  # (N, d_s, d_s)
    V = scales["m_qkv"] * (X @ params["Wv"].T)  # (N, d_s, width)
    Z = A @ V  # (N, d_s, width)
    if "Wh" in params:
        Z = scales["m_h"] * (Z @ params["Wh"].T)  # (N, d_s, width)
    H = torch.relu(Z)
    # average pooling over tokens, or the class token's features
    pooled = H[:, 0] if "cls" in params else H.mean(dim=1)  # (N, width)
    out = scales["tau1"] * (pooled @ params["wo"])  # (N, n_outputs)
    return (out, A) if return_attention else out


class ShallowTransformer(torch.nn.Module):
    """nn.Module wrapper around `forward` for users who prefer modules; the library itself is functional."""

    def __init__(self, spec: ModelSpec, seed: int = 0):
        super().__init__()
        self.spec = spec
        self._scales = spec.scales()
        self.params = torch.nn.ParameterDict(
            {k: torch.nn.Parameter(v) for k, v in init_params(spec, seed).items()}
        )

    def forward(self, X: torch.Tensor) -> torch.Tensor:  # noqa: D401
        return forward(dict(self.params), X, self._scales)


def attention_deviation(A: torch.Tensor) -> tuple:
    """(mean, max) of |A - 1/d_s| over all samples and entries: how far attention is from average pooling."""
    dev = (A - 1.0 / A.shape[-1]).abs()
    return float(dev.mean()), float(dev.max())
