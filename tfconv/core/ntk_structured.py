"""Structured (Jacobian-free) empirical NTK: the same K as `tfconv.ntk.ntk_block_exact`, by large GEMMs.

    K[i, j] = (1 / C) * sum_c < d f_c(X_i) / d theta , d f_c(X_j) / d theta >

Every weight acts token-wise (Z = X W^T), so a sample's gradient for one output is a sum over
tokens of outer products, dW = sum_t g_t x_t^T (g_t: the cotangent at token t, x_t: the input row).
Two samples then contribute either

    explicit form:  < G_i, G_j >  with G_i = sum_t g_it x_it^T             fan_out * fan_in per pair
    token form:     sum_{t,u} (g_it . g_ju) (x_it . x_ju)                   d_s^2 (fan_out + fan_in) per pair

and, because this model's inputs to Wh live in a d-dimensional subspace (Z = A V = m (A X) Wv^T),
a third "lowrank" form for Wh with width * d per pair.  The engine picks, per weight matrix, the
cheapest form (`choose_forms`; `_pair_costs` has the formulas).  Cotangents are derived by hand
(backprop through mean-pool, ReLU, Wh, A V, the row softmax and Q K^T), batched over samples and
outputs; no per-sample Jacobian over all parameters is ever formed.

Notation (one sample; m = m_qkv, g = tau1 / d_s, s_k = sum_c wo[k, c]^2, S = diag(s), Y = A X,
Gq = Wq^T Wq, Gk = Wk^T Wk, Gv = Wv^T Wv = L L^T, B = M^T Y):

    U = m_h Z Wh^T (U = Z without Wh),  M = 1[U > 0],  p = mean_t relu(U)
    G_U[c] = g M * wo[:, c]                     cotangent at U for output c      (d_s, width)
    G_Z[c] = m_h G_U[c] Wh  (= G_U[c] w/o Wh)   cotangent at Z = A V             (d_s, width)
    G_A[c] = G_Z[c] V^T;   G_S[c] = A * (G_A[c] - rowsum(A * G_A[c]))             (d_s, d_s)

Kernel terms (each already summed over c and divided by C):

    wo  tau1^2 p_i . p_j                                          (the C identical terms average out)
    Wh  lowrank:  J_h[c] = m_h m g diag(wo_c) B Wv^T, so the c-sum is
                  (m_h m g)^2 / C * < S^1/2 B_i L , S^1/2 B_j L >                    width*d per pair
        token:    (m_h m g)^2 / C * sum_{t,u} (M_i S M_j^T)_{tu} (Y_i Gv Y_j^T)_{tu}  d_s^2 (width + d)
        explicit: J_h[c] = m_h G_U[c]^T Z                                            C width^2
    Wv  with Wh:  explicit J_v[c] = m G_Z[c]^T Y  (C width d);   or token:
                  m^2 / C * sum_{t,u} (sum_c G_Zi[c] G_Zj[c]^T)_{tu} (Y_i Y_j^T)_{tu}   d_s^2 (C width + d)
        w/o Wh:   explicit (m g)^2 / C * < S^1/2 B_i , S^1/2 B_j >  (width d, any C);   or token:
                  (m g)^2 / C * sum_{t,u} (M_i S M_j^T)_{tu} (Y_i Y_j^T)_{tu}          d_s^2 (width + d)
    Wq  J_q[c] = Wk R[c],   R[c] = m^2 tau0 X^T G_S[c]^T X  (d x d):  <R_i, Gk R_j>       "R": C d^2
    Wk  J_k[c] = Wq R[c]^T:                                    <R_i^T, Gq R_j^T>      "R": C d^2
        (stored as Lk^T R[c] and Lq^T R[c]^T, Gk = Lk Lk^T, Gq = Lq Lq^T: one factor on both sides)
        (or the explicit width x d J_q, J_k when width < d)

All per-pair work is GEMMs between per-sample factor rows (every F_i . F_j term in one GEMM: the
factors lie side by side in one row per sample) (plus, for token forms, a Hadamard
product and a sum over token pairs).  With the default forms, C = 1 and a hidden layer, the per-pair
cost is about width (2 d + 1) + 2 d^2 multiply-adds, against width^2 + 3 width d + width for the
Jacobian contraction; `flop_count` writes every counted matmul out.

Precision and device: matmuls run in the parameters' dtype (float32 or float64) on the parameters'
device (CPU or CUDA; the inputs follow them); each term's block is converted to float64 before the
terms are added, and the result comes back as a float64 numpy array.  The ReLU mask comes from U computed exactly as
`tfconv.model.forward` computes it, so the engine and the reference agree on the active units.
"""
from __future__ import annotations

import itertools
import math
import threading
import weakref
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from .model import ModelSpec

__all__ = ["ntk_block_structured", "choose_forms", "flop_count", "FORMS", "factor_width", "rank_bound", "factor_rows",
           "factor_buffer", "ntk_block_from_factors"]

#: The forms each weight matrix's kernel term can be computed in; `choose_forms` picks the cheapest
#: (ties go to the first listed).  "R" is the d x d form of Wq/Wk.
FORMS = {"qk": ("R", "explicit"), "Wv": ("explicit", "token"), "Wh": ("lowrank", "token", "explicit")}

#: Default memory budget (bytes) for cached per-sample factors; beyond it the rows (and columns)
#: are processed in panels and column factors are recomputed per row panel.
DEFAULT_CACHE_BYTES = 2 * 1024 ** 3

#: Rows and columns per pair GEMM when every kernel term is a GEMM (no token form; the default forms):
#: one (rows x G) @ (G x cols) GEMM, G ~ 4e4 at width 256, streams its column factors once per row
#: chunk, so small chunks are memory-bound.  Measured at width 256, d = 64, float64, one thread, the
#: pairs of a 2000 x 2000 block (factors given): 12.0 s in 250 x 256 GEMMs, 9.8 s in 512 x 2048, 9.3-9.7 s
#: in 1024 x 2048; a diagonal block (whole row chunks from the diagonal on) 6.6-6.8 s, 5.9-6.3 s and
#: 7.1-7.7 s: 512 rows is the compromise.
GEMM_ROWS, GEMM_COLS = 512, 2048


def _pair_costs(spec: ModelSpec) -> Dict[str, Dict[str, int]]:
    """Multiply-adds per sample pair of each form: the quantity `choose_forms` minimises."""
    w, d, ds, C = spec.width, spec.d, spec.d_s, spec.n_outputs
    costs = {"qk": {"R": 2 * C * d * d, "explicit": 2 * C * w * d}}
    if spec.hidden:
        costs["Wv"] = {"explicit": C * w * d, "token": ds * ds * (C * w + d + 1)}
        costs["Wh"] = {"lowrank": w * d, "token": ds * ds * (w + d + 1), "explicit": C * w * w}
    else:  # without Wh the Wv cotangents collapse over outputs (S = sum_c diag(wo_c)^2)
        costs["Wv"] = {"explicit": w * d, "token": ds * ds * (w + d + 1)}
    return costs


def choose_forms(spec: ModelSpec, forms: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The cheapest form per matrix; `forms` overrides any of them (used by the tests)."""
    chosen = {}
    for key, options in _pair_costs(spec).items():
        chosen[key] = min(FORMS[key], key=lambda f: options[f])
    for key, val in (forms or {}).items():
        if key not in FORMS or val not in FORMS[key]:
            raise ValueError(f"forms[{key!r}] must be one of {FORMS.get(key, FORMS)}, got {val!r}")
        if key in chosen:  # a "Wh" override is ignored for a model without Wh
            chosen[key] = val
    return chosen


def _pair_chunks(spec: ModelSpec, fm: Mapping[str, str], chunk_size: int,
                 col_chunk_size: Optional[int]) -> Tuple[int, int]:
    """(rows, columns) per pair GEMM: ``chunk_size`` x ``col_chunk_size`` (default max(chunk_size, 256))
    when a token form makes the pair block d_s^2 times larger; else max(chunk_size, `GEMM_ROWS`) x
    (``col_chunk_size`` or max(chunk_size, `GEMM_COLS`))."""
    chunk = max(1, int(chunk_size))
    col = max(chunk, int(col_chunk_size or 256))
    token = fm["Wv"] == "token" or (spec.hidden and fm.get("Wh") == "token")
    if token:
        return chunk, col
    return max(chunk, GEMM_ROWS), (col if col_chunk_size else max(chunk, GEMM_COLS))


def _as_tensor(X, dtype, device=None) -> torch.Tensor:
    if isinstance(X, torch.Tensor):
        return X.detach().to(dtype=dtype, device=device)
    a = np.asarray(X)
    if not a.flags.writeable:  # e.g. rows of a read-only memory map: torch would share it and warn
        a = np.array(a)
    return torch.as_tensor(a, dtype=dtype, device=device)


class _Engine:
    """Per-sample factors and the pair kernel for one (params, spec, forms)."""

    def __init__(self, params: Mapping[str, torch.Tensor], spec: ModelSpec, forms: Dict[str, str]):
        self.spec, self.forms = spec, forms
        P = {k: torch.as_tensor(v).detach() for k, v in params.items()}
        self.P = P
        self.dtype = P["Wq"].dtype
        self.device = P["Wq"].device  # every factor and pair GEMM runs where the parameters live
        self.hidden = "Wh" in P
        if self.hidden != spec.hidden:
            raise ValueError(f"params {'have' if self.hidden else 'lack'} 'Wh' but spec.hidden={spec.hidden}")
        sc = spec.scales()
        self.tau0, self.tau1, self.m, self.m_h = sc["tau0"], sc["tau1"], sc["m_qkv"], sc["m_h"]
        w, d, ds, C = spec.width, spec.d, spec.d_s, spec.n_outputs
        self.g = self.tau1 / ds
        self.rc = 1.0 / math.sqrt(C)  # 1/C of the kernel, as 1/sqrt(C) on each side
        wo = P["wo"]  # (w, C)
        self.s = (wo * wo).sum(1)  # (w,)
        self.sqrt_s = self.s.sqrt()
        Gv64 = P["Wv"].T.double() @ P["Wv"].double()
        self.Gv = Gv64.to(self.dtype)
        self.L = _psd_root(Gv64).to(self.dtype)  # Gv = L L^T, (d, d)
        # <R_i, Gk R_j> = <Lk^T R_i, Lk^T R_j>: the qk terms are one factor on both sides too
        self.LkT = _psd_root(P["Wk"].T.double() @ P["Wk"].double()).T.to(self.dtype)  # (d, d)
        self.LqT = _psd_root(P["Wq"].T.double() @ P["Wq"].double()).T.to(self.dtype)
        if self.hidden:
            # G_Z[c] = m_h g (M * wo_c) Wh = M @ (m_h g diag(wo_c) Wh): every output in one GEMM
            self.Whc = (self.m_h * self.g) * (wo.T[:, :, None] * P["Wh"][None]).permute(1, 0, 2).reshape(w, C * w)
        self.need_GZ = self.hidden  # G_A and Wv need the Z cotangents only with a hidden layer
        # ---- per-sample factor buffers: name -> per-sample shape.  The GEMM factors (every term of
        # the form F_i . F_j) lie side by side in one row per sample, so that a block of K is one GEMM.
        f = forms
        gemm: Dict[str, tuple] = {"pool": (w,)}
        if f["Wv"] == "explicit":
            gemm["Jv" if self.hidden else "Bv"] = (d, C * w) if self.hidden else (d, w)
        if self.hidden and f["Wh"] == "lowrank":
            gemm["Bh"] = (d, w)
        if self.hidden and f["Wh"] == "explicit":
            gemm["Jh"] = (C, w, w)
        if f["qk"] == "explicit":
            gemm["Jqk"] = (2, C, w, d)
        else:
            gemm["R"] = (2, C, d, d)
        self.gemm_shapes = gemm
        shapes: Dict[str, tuple] = {}
        # token terms: (cotangent, left scale of the cotangent or None, input-left, input-right)
        self.token_terms: List[Tuple[str, Optional[torch.Tensor], str, str]] = []
        if self.hidden and f["Wh"] == "token":
            self.token_terms.append(("M", self.s, "YGv", "Y"))
            shapes["YGv"] = (ds, d)
        if f["Wv"] == "token":
            self.token_terms.append(("GZ", None, "Yv", "Y") if self.hidden else ("M", self.s, "Yv", "Y"))
            shapes["Yv"] = (ds, d)
        for cot, _, _, _ in self.token_terms:
            shapes[cot] = (ds, w) if cot == "M" else (ds, C * w)
            shapes["Y"] = (ds, d)
        self.token_shapes = shapes

    def bytes_per_sample(self) -> int:
        n = sum(math.prod(s) for s in (*self.gemm_shapes.values(), *self.token_shapes.values()))
        return n * torch.finfo(self.dtype).bits // 8

    # ---------------------------------------------------------------- per-sample factors
    def _fill(self, X: torch.Tensor, F: Dict[str, torch.Tensor], i0: int) -> None:
        """Write the factors of samples X (n, d_s, d) into F[name][i0:i0 + n]."""
        P, spec, forms = self.P, self.spec, self.forms
        n, ds, d = X.shape
        w, C = spec.width, spec.n_outputs
        m, m_h, tau0, g, rc = self.m, self.m_h, self.tau0, self.g, self.rc
        dst = {k: v[i0:i0 + n] for k, v in F.items()}
        # forward, written exactly as tfconv.model.forward so that the ReLU mask agrees
        # (`_scale(t, s)` is s * t in place: the same floats, one (n, d_s, w) allocation fewer each)
        Q = _scale(X @ P["Wq"].T, m)  # (n, d_s, w)
        K = _scale(X @ P["Wk"].T, m)
        A = torch.softmax(tau0 * (Q @ K.transpose(-1, -2)), dim=-1)  # (n, d_s, d_s)
        del Q, K
        V = _scale(X @ P["Wv"].T, m)  # (n, d_s, w)
        Z = A @ V  # (n, d_s, w)
        U = _scale(Z @ P["Wh"].T, m_h) if self.hidden else Z
        if not (self.hidden and forms["Wh"] == "explicit"):
            del Z
        Mb = U > 0  # ReLU mask
        dst["pool"].copy_(torch.mean(torch.relu(U), dim=1).mul_(self.tau1))  # GEMM factors are strided views
        del U
        M = Mb.to(self.dtype)  # (n, d_s, w)
        Y = A @ X  # (n, d_s, d);  Z = m Y Wv^T
        # cotangent at A for every output: G_A[c] = G_Z[c] V^T, (n, d_s[t], C, d_s[u])
        if self.need_GZ:
            GZ = (M.reshape(n * ds, w) @ self.Whc).reshape(n, ds, C * w)  # (n, d_s, C*w)
            GA = torch.bmm(GZ.reshape(n, ds * C, w), V.transpose(1, 2))
        else:  # G_Z[c] = g M * wo_c, so G_A[c] = g M (V * wo_c)^T
            Vc = (g * V)[:, :, None, :] * P["wo"].T[None, None]  # (n, d_s[u], C, w)
            GA = torch.bmm(M, Vc.reshape(n, ds * C, w).transpose(1, 2)).reshape(n, ds, ds, C).transpose(2, 3)
            del Vc
        del V
        GA = GA.reshape(n, ds, C, ds).transpose(1, 2)  # (n, C, d_s, d_s)
        A_ = A[:, None]
        GS = A_ * (GA - (GA * A_).sum(-1, keepdim=True))  # softmax backward
        del GA
        R = (m * m * tau0) * (X.transpose(1, 2)[:, None] @ GS.transpose(-1, -2) @ X[:, None])  # (n, C, d, d)
        del GS
        Rk = R.transpose(-1, -2)  # J_q[c] = Wk R[c],  J_k[c] = Wq Rk[c]
        if "R" in dst:  # <rc R_i, rc Gk R_j> = <rc Lk^T R_i, rc Lk^T R_j> (Gk = Lk Lk^T); likewise Gq
            dst["R"][:, 0] = self.LkT @ (rc * R)
            dst["R"][:, 1] = self.LqT @ (rc * Rk)
        if "Jqk" in dst:
            dst["Jqk"][:, 0] = P["Wk"] @ (rc * R)
            dst["Jqk"][:, 1] = P["Wq"] @ (rc * Rk)
        if "Jv" in dst:  # J_v[c]^T = m Y^T G_Z[c]: (n, d, C*w)
            dst["Jv"].copy_(torch.bmm((m * rc) * Y.transpose(1, 2), GZ))
        if "Bv" in dst or "Bh" in dst:
            Ms = M * self.sqrt_s  # (n, d_s, w)
            if "Bv" in dst:  # (m g / sqrt C) Y^T M S^1/2
                dst["Bv"].copy_(torch.bmm((m * g * rc) * Y.transpose(1, 2), Ms))
            if "Bh" in dst:  # (m_h m g / sqrt C) L^T Y^T M S^1/2
                dst["Bh"].copy_(torch.bmm((m_h * m * g * rc) * (Y @ self.L).transpose(1, 2), Ms))
            del Ms
        if "Jh" in dst:  # J_h[c] = m_h G_U[c]^T Z
            GU = (g * rc * m_h) * M[:, None] * P["wo"].T[None, :, None, :]  # (n, C, d_s, w)
            dst["Jh"].copy_(GU.transpose(-1, -2) @ Z[:, None])
            del GU, Z
        if "M" in dst:
            dst["M"].copy_(M)
        if "GZ" in dst:
            dst["GZ"].copy_(GZ)
        if "Y" in dst:
            dst["Y"].copy_(Y)
        if "YGv" in dst:  # Wh token: z.z = m^2 y^T Gv y; coefficient folded into the left input
            dst["YGv"].copy_(Y @ (((m_h * m * g * rc) ** 2) * self.Gv))
        if "Yv" in dst:
            dst["Yv"].copy_(((m * rc) ** 2 * (1.0 if self.hidden else g * g)) * Y)

    def factors(self, X: torch.Tensor, batch: int, slot: str = "rows") -> Dict[str, torch.Tensor]:
        """Factors of all samples of X, computed `batch` samples at a time into one buffer taken from
        this thread's workspace (`slot`: the factor sets alive at the same time use different slots)."""
        n = X.shape[0]
        gsz = {k: math.prod(s) for k, s in self.gemm_shapes.items()}
        tsz = {k: math.prod(s) for k, s in self.token_shapes.items()}
        G = sum(gsz.values())
        flat = _WORKSPACE.take(slot, n * (G + sum(tsz.values())), self.dtype, self.device)
        F = {"gemm": flat[:n * G].view(n, G)}  # row i: sample i's GEMM factors side by side
        at = 0
        for k, s in self.gemm_shapes.items():
            F[k] = F["gemm"][:, at:at + gsz[k]].view((n,) + s)
            at += gsz[k]
        at = n * G
        for k, s in self.token_shapes.items():
            F[k] = flat[at:at + n * tsz[k]].view((n,) + s)
            at += n * tsz[k]
        for i in range(0, n, batch):
            self._fill(X[i:i + batch], F, i)
        return F

    # ---------------------------------------------------------------- pair kernel
    def pairs(self, Fr, Fc, r: slice, c: slice) -> torch.Tensor:
        """K[r, c] (float64) from row factors Fr[r] and column factors Fc[c]."""
        blk = (Fr["gemm"][r] @ Fc["gemm"][c].T).to(torch.float64)  # every GEMM term in one GEMM
        nr, nc = blk.shape
        ds = self.spec.d_s
        for cot, scale, in_l, in_r in self.token_terms:
            # token-major rows (t, i) so that the sum over token pairs runs over contiguous blocks
            a = Fr[cot][r] if scale is None else Fr[cot][r] * scale
            cg = a.transpose(0, 1).reshape(ds * nr, -1) @ Fc[cot][c].transpose(0, 1).reshape(ds * nc, -1).T
            ig = Fr[in_l][r].transpose(0, 1).reshape(ds * nr, -1) @ Fc[in_r][c].transpose(0, 1).reshape(ds * nc, -1).T
            cg.mul_(ig)  # (d_s nr, d_s nc)
            blk.add_(cg.view(ds, nr, ds, nc).sum(dim=(0, 2)).to(torch.float64))
        return blk

    def panel(self, Fr, Fc, out: np.ndarray, r0: int, c0: int, diag: bool, chunk: int, col_chunk: int):
        """Fill out[r0 + rows of Fr, c0 + cols of Fc] (`_fill_panel`)."""
        _fill_panel(lambda r, c: self.pairs(Fr, Fc, r, c), Fr["gemm"].shape[0], Fc["gemm"].shape[0],
                    out, r0, c0, diag, chunk, col_chunk)


def _fill_panel(pairs, nr: int, nc: int, out: np.ndarray, r0: int, c0: int, diag: bool, chunk: int,
                col_chunk: int) -> None:
    """Fill out[r0:r0 + nr, c0:c0 + nc] with pairs(rows, cols) (a float64 tensor per chunk pair).  With diag
    (rows and columns are the same samples) only chunk pairs on or above the diagonal are computed and
    mirrored; diagonal chunk blocks are made exactly symmetric."""
    for a in range(0, nr, chunk):
        ra = slice(a, min(a + chunk, nr))
        for b in range(a if diag else 0, nc, col_chunk):
            cb = slice(b, min(b + col_chunk, nc))
            blk = pairs(ra, cb).cpu().numpy()
            out[r0 + ra.start:r0 + ra.stop, c0 + cb.start:c0 + cb.stop] = blk
            if diag:  # mirror the part right of the diagonal chunk block
                k0 = max(cb.start, ra.stop)
                if k0 < cb.stop:
                    out[r0 + k0:r0 + cb.stop, c0 + ra.start:c0 + ra.stop] = blk[:, k0 - cb.start:].T
        if diag:  # the diagonal chunk block: its upper triangle wins
            sub = out[r0 + ra.start:r0 + ra.stop, c0 + ra.start:c0 + ra.stop]
            il = np.tril_indices(sub.shape[0], -1)
            sub[il] = sub.T[il]


def _scale(t: torch.Tensor, s: float) -> torch.Tensor:
    """s * t, computed in place (bitwise the same floats as `s * t`; nothing to do for s == 1)."""
    return t if s == 1.0 else t.mul_(s)


#: Factor buffers up to this many bytes per thread are kept between calls (`_Workspace`).
WORKSPACE_KEEP_BYTES = 512 * 1024 ** 2


class _Buffers(dict):
    """One thread's buffers: slot -> tensor (a dict that can be weakly referenced, hashed by identity)."""

    __hash__ = object.__hash__

    def __eq__(self, other):
        return self is other if isinstance(other, _Buffers) else dict.__eq__(self, other)


#: Every live thread's buffers (`release_all_workspaces` frees them from any thread; a thread's entry
#: goes with the thread).
_ALL_BUFFERS: "weakref.WeakSet[_Buffers]" = weakref.WeakSet()
_ALL_LOCK = threading.Lock()


class _Workspace(threading.local):
    """Per-thread factor buffers, reused from one engine call to the next.

    A Gram is assembled block by block, many blocks per worker process, and each call writes its
    factors (about 280 KB per sample at width 1024) right after allocating them: into fresh memory that
    costs a page fault and a zeroing per page, a quarter of a small block's time (measured at N = 256,
    width 1024: factors 119 ms fresh vs 87 ms reused, one thread).  Buffers are kept while they total at
    most `WORKSPACE_KEEP_BYTES` (they only grow to what a call needed); `release_workspace()` frees them.
    """

    def __init__(self):  # once per thread
        self.buffers: Dict[str, torch.Tensor] = _Buffers()
        with _ALL_LOCK:
            _ALL_BUFFERS.add(self.buffers)

    def take(self, slot: str, numel: int, dtype: torch.dtype, device=None) -> torch.Tensor:
        buf = self.buffers.get(slot)
        device = torch.device(device or "cpu")
        if buf is None or buf.dtype != dtype or buf.device != device or buf.numel() < numel:
            self.buffers.pop(slot, None)  # free the old one before allocating its successor
            buf = torch.empty(numel, dtype=dtype, device=device)
            self.buffers[slot] = buf
        return buf[:numel]

    def trim(self, keep: Optional[int] = None) -> None:
        """After a call: drop the buffers if together they exceed ``keep`` bytes (`WORKSPACE_KEEP_BYTES`)."""
        limit = WORKSPACE_KEEP_BYTES if keep is None else keep
        if sum(b.numel() * b.element_size() for b in self.buffers.values()) > limit:
            self.buffers.clear()


_WORKSPACE = _Workspace()


def release_workspace() -> None:
    """Free this thread's factor buffers (see `_Workspace`)."""
    _WORKSPACE.buffers.clear()


def release_all_workspaces() -> int:
    """Free the factor buffers of every thread of this process (e.g. a Dask worker's, once a Gram's blocks
    are done: ``client.run(release_all_workspaces)``); returns the bytes freed.  Call it when no engine
    call is running."""
    freed = 0
    with _ALL_LOCK:
        for bufs in list(_ALL_BUFFERS):
            freed += sum(b.numel() * b.element_size() for b in bufs.values())
            bufs.clear()
    return freed


def trim_workspace(keep: Optional[int] = None) -> None:
    """Free this thread's factor buffers if together they exceed ``keep`` bytes (`_Workspace.trim`)."""
    _WORKSPACE.trim(keep)


def _psd_root(G: torch.Tensor) -> torch.Tensor:
    """L with L L^T = G for a symmetric PSD G (L = E sqrt(ev), eigenvalues clamped at 0): defined even
    when G is singular (width < d)."""
    ev, E = torch.linalg.eigh(G)
    return E * ev.clamp_min(0).sqrt()


def _panels(n: int, size: int) -> List[Tuple[int, int]]:
    return [(i, min(i + size, n)) for i in range(0, n, size)]


def ntk_block_structured(
    params: Mapping[str, torch.Tensor],
    spec: ModelSpec,
    X_rows,
    X_cols=None,
    chunk_size: int = 64,
    *,
    col_chunk_size: Optional[int] = None,
    forms: Optional[Mapping[str, str]] = None,
    max_cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> np.ndarray:
    """K[rows, cols] of the empirical NTK, equal to `ntk_block_exact`; float64 (n_rows, n_cols).

    X_rows, X_cols: (n, d_s, d) arrays or tensors (cast to the params' dtype).  X_cols=None means
    X_cols = X_rows: factors are computed once, only chunk pairs on or above the diagonal are
    computed, and the result is exactly symmetric.
    chunk_size: samples per factor batch, and rows per pair GEMM when a token form is used (256 runs
    those about 25% faster than 64 on a 2-core CPU); col_chunk_size: columns per pair GEMM (default
    max(chunk_size, 256)); with GEMM forms only the pair GEMMs are at least `GEMM_ROWS` x
    `GEMM_COLS` (`_pair_chunks`).  forms: override `choose_forms`, e.g. {"Wh": "token"}.
    Memory: the factors of all rows and columns (`_Engine.bytes_per_sample`: about
    (C + 1) width d + width numbers per sample by default) while they fit max_cache_bytes, else
    panels of that size; plus O(chunk_size * col_chunk_size) per pair block (times d_s^2 for token
    forms).  Never O(n_params) per sample.
    """
    fm = choose_forms(spec, forms)
    eng = _Engine(params, spec, fm)
    symmetric = X_cols is None
    Xr = _as_tensor(X_rows, eng.dtype, eng.device)
    Xc = Xr if symmetric else _as_tensor(X_cols, eng.dtype, eng.device)
    want = (spec.d_s, spec.d)
    if Xr.ndim != 3 or Xc.ndim != 3 or tuple(Xr.shape[1:]) != want or tuple(Xc.shape[1:]) != want:
        raise ValueError(
            f"X_rows/X_cols must have shape (n, d_s={spec.d_s}, d={spec.d}); got "
            f"{tuple(Xr.shape)} and {tuple(Xc.shape)}"
        )
    chunk = max(1, int(chunk_size))  # samples per factor batch
    rows, cols = _pair_chunks(spec, fm, chunk, col_chunk_size)  # per pair GEMM
    n_r, n_c = Xr.shape[0], Xc.shape[0]
    out = np.empty((n_r, n_c), dtype=np.float64)
    if n_r == 0 or n_c == 0:
        return out
    bps = eng.bytes_per_sample()
    panel = max(chunk, (max_cache_bytes // (2 * bps)) // chunk * chunk)  # two panels fit the budget
    with torch.no_grad():
        if symmetric:
            panels = _panels(n_r, n_r if n_r * bps <= max_cache_bytes else panel)
            for pi, (a0, a1) in enumerate(panels):
                Fa = eng.factors(Xr[a0:a1], chunk, "rows")
                eng.panel(Fa, Fa, out, a0, a0, True, rows, cols)
                for b0, b1 in panels[pi + 1:]:
                    Fb = eng.factors(Xr[b0:b1], chunk, "cols")
                    eng.panel(Fa, Fb, out, a0, b0, False, rows, cols)
                    out[b0:b1, a0:a1] = out[a0:a1, b0:b1].T
                    del Fb
                del Fa
        else:
            cache_cols = (n_r + n_c) * bps <= max_cache_bytes or n_c * bps <= max_cache_bytes // 2
            row_panels = _panels(n_r, n_r if (n_r + n_c) * bps <= max_cache_bytes else panel)
            col_panels = [(0, n_c)] if cache_cols else _panels(n_c, panel)
            Fc_all = eng.factors(Xc, chunk, "cols") if cache_cols else None
            for a0, a1 in row_panels:
                Fa = eng.factors(Xr[a0:a1], chunk, "rows")
                for b0, b1 in col_panels:
                    Fb = Fc_all if cache_cols else eng.factors(Xc[b0:b1], chunk, "cols")
                    eng.panel(Fa, Fb, out, a0, b0, False, rows, cols)
                del Fa
    _WORKSPACE.trim()
    return out


def factor_width(spec: ModelSpec, forms: Optional[Mapping[str, str]] = None) -> Optional[int]:
    """G, the length of one sample's factor row when every kernel term is a GEMM (K = F F^T with F of
    shape (N, G): rank K <= G); None when a token form is used (then K is not one GEMM of factor rows).
    With the default forms and one output: width (1 + 2 d) + 2 d^2 with a hidden layer."""
    fm = choose_forms(spec, forms)
    if fm["Wv"] == "token" or (spec.hidden and fm.get("Wh") == "token"):
        return None
    w, d, C = spec.width, spec.d, spec.n_outputs
    G = w + (C * w * d if spec.hidden else w * d) if fm["Wv"] == "explicit" else w
    if spec.hidden:
        G += {"lowrank": w * d, "explicit": C * w * w}[fm["Wh"]]
    return G + (2 * C * w * d if fm["qk"] == "explicit" else 2 * C * d * d)


def rank_bound(spec: ModelSpec) -> Optional[int]:
    """An upper bound on the rank of the empirical NTK of ``spec`` whatever its parameters and inputs:
    the fewest factor columns G over the forms whose terms are all GEMMs (K = F F^T, `factor_width`), or
    the parameter count P if smaller (K = J J^T).
    With more samples than this, K is singular by construction (lambda_min = 0 exactly; the computed
    K's is rounding).  None for the ViT variant (its front end is not factored here)."""
    if spec.vit:
        return None
    keys = list(_pair_costs(spec))
    options = [[f for f in FORMS[k] if f != "token"] for k in keys]
    # K = J J^T as well: rank K <= the parameter count
    return min([spec.n_params()] + [factor_width(spec, dict(zip(keys, combo))) for combo in itertools.product(*options)])


def factor_rows(params: Mapping[str, torch.Tensor], spec: ModelSpec, X, chunk_size: int = 64, *,
                slot: str = "rows", forms: Optional[Mapping[str, str]] = None) -> torch.Tensor:
    """F (n, G): every sample's factors side by side, K[i, j] = F_i . F_j (`ntk_block_from_factors`), in
    the parameters' dtype and on their device.  Only for GEMM forms (`factor_width` is not None).

    The result is a view of this thread's workspace ``slot`` (`_Workspace`): the next call with the same
    slot overwrites it; copy or write it out to keep it.  A Gram's blocks can share the factors of
    their samples instead of recomputing them per block (`tfconv.runner` keeps them on disk)."""
    fm = choose_forms(spec, forms)
    if factor_width(spec, fm) is None:
        raise ValueError(f"factor_rows needs every kernel term as a GEMM; forms {fm} use a token form")
    eng = _Engine(params, spec, fm)
    Xt = _as_tensor(X, eng.dtype, eng.device)
    if Xt.ndim != 3 or tuple(Xt.shape[1:]) != (spec.d_s, spec.d):
        raise ValueError(f"X must have shape (n, d_s={spec.d_s}, d={spec.d}); got {tuple(Xt.shape)}")
    with torch.no_grad():
        return eng.factors(Xt, max(1, int(chunk_size)), slot)["gemm"]


def factor_buffer(n: int, G: int, dtype: torch.dtype, slot: str = "cols", device=None) -> torch.Tensor:
    """An (n, G) tensor from this thread's workspace ``slot`` to read stored factors into (no fresh
    allocation per block: see `_Workspace`)."""
    return _WORKSPACE.take(slot, n * G, dtype, device).view(n, G)


def ntk_block_from_factors(F_rows: torch.Tensor, F_cols: Optional[torch.Tensor] = None) -> np.ndarray:
    """K[rows, cols] = F_rows F_cols^T in float64 (each GEMM in the factors' dtype), by the same
    `GEMM_ROWS` x `GEMM_COLS` pair GEMMs as `ntk_block_structured`; F_cols=None: the symmetric block
    (pairs on or above the diagonal, mirrored: exactly symmetric)."""
    symmetric = F_cols is None
    Fc = F_rows if symmetric else F_cols
    if F_rows.ndim != 2 or Fc.ndim != 2 or F_rows.shape[1] != Fc.shape[1]:
        raise ValueError(f"factor rows must be (n, G) with the same G; got {tuple(F_rows.shape)} and {tuple(Fc.shape)}")
    out = np.empty((F_rows.shape[0], Fc.shape[0]), dtype=np.float64)

    def pairs(r: slice, c: slice) -> torch.Tensor:
        return (F_rows[r] @ Fc[c].T).to(torch.float64)

    with torch.no_grad():
        _fill_panel(pairs, out.shape[0], out.shape[1], out, 0, 0, symmetric, GEMM_ROWS, GEMM_COLS)
    return out


def flop_count(
    spec: ModelSpec,
    n_rows: int,
    n_cols: Optional[int] = None,
    chunk_size: int = 64,
    col_chunk_size: Optional[int] = None,
    forms: Optional[Mapping[str, str]] = None,
) -> Dict[str, float]:
    """FLOPs (2 per multiply-add) of the matmuls `ntk_block_structured` performs.

    n_cols=None: the symmetric case (factors once; chunk pairs on or above the diagonal).  Assumes
    the factors fit the cache (no panel recomputation).  Elementwise work (softmax, mask, scaling,
    float64 conversion) is not counted.  Formula (w = width, C = n_outputs, [x] = when form x is used):

      per sample  3 d_s d w + 2 d_s^2 w + d_s^2 d          forward: X W^T (q, k, v), Q K^T, A V, A X
                  + (1 + C) d_s w^2             [hidden]   forward Z Wh^T;  G_Z = M (m_h g diag(wo_c) Wh)
                  + C d_s^2 w                              G_A = G_Z V^T
                  + C (d_s^2 d + d_s d^2)                  R = X^T G_S^T X
                  + C d_s w d  [Wv explicit, hidden]       J_v = Y^T G_Z
                  + d_s w d    [Wv explicit, no hidden]    S^1/2 B = M^T Y
                  + d_s w d + d_s d^2  [Wh lowrank]        B L = M^T (Y L)
                  + d_s d^2    [Wh token]                  Y Gv
                  + C d_s w^2  [Wh explicit]               J_h = G_U^T Z
                  + 2 C d^3 [qk R] | 2 C w d^2 [qk explicit]     Lk^T R, Lq^T R^T | Wk R, Wq R^T
      per pair    w                                        wo: pooled gram
                  + C w d | d_s^2 (C w + d)  [Wv explicit | token, hidden]
                  + w d   | d_s^2 (w + d)    [Wv explicit | token, no hidden]
                  + w d | d_s^2 (w + d) | C w^2   [Wh lowrank | token | explicit]
                  + 2 C d^2 | 2 C w d             [qk R | explicit]
    """
    fm = choose_forms(spec, forms)
    w, d, ds, C, hid = spec.width, spec.d, spec.d_s, spec.n_outputs, spec.hidden
    ps = 3 * ds * d * w + 2 * ds * ds * w + ds * ds * d
    ps += (1 + C) * ds * w * w if hid else 0
    ps += C * ds * ds * w + C * (ds * ds * d + ds * d * d)
    if fm["Wv"] == "explicit":
        ps += C * ds * w * d if hid else ds * w * d
    ps += 2 * C * d ** 3 if fm["qk"] == "R" else 2 * C * w * d * d
    pp = w
    if hid:
        pp += C * w * d if fm["Wv"] == "explicit" else ds * ds * (C * w + d)
        ps += {"lowrank": ds * w * d + ds * d * d, "token": ds * d * d, "explicit": C * ds * w * w}[fm["Wh"]]
        pp += {"lowrank": w * d, "token": ds * ds * (w + d), "explicit": C * w * w}[fm["Wh"]]
    else:
        pp += w * d if fm["Wv"] == "explicit" else ds * ds * (w + d)
    pp += 2 * C * d * d if fm["qk"] == "R" else 2 * C * w * d
    if n_cols is None:
        chunk = _pair_chunks(spec, fm, chunk_size, col_chunk_size)[0]
        n_pairs = sum(min(chunk, n_rows - a) * (n_rows - a) for a in range(0, n_rows, chunk))
        n_samples = n_rows
    else:
        n_pairs = n_rows * n_cols
        n_samples = n_rows + n_cols
    return {
        "per_sample": 2.0 * ps,
        "per_pair": 2.0 * pp,
        "n_samples": float(n_samples),
        "n_pairs": float(n_pairs),
        "total": 2.0 * (ps * n_samples + pp * n_pairs),
    }
