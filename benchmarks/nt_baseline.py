#!/usr/bin/env python
"""neural-tangents' empirical NTK of tfconv's model, for `bench_gram.py --nt-python PY`.

    PY benchmarks/nt_baseline.py PROBLEM.npz OUT.npy BLOCK REPEATS IMPLEMENTATION

Runs in an interpreter that has jax and neural-tangents (not tfconv's venv: neural-tangents 0.6.5
needs jax 0.4.23; see benchmarks/README.md).  PROBLEM.npz holds the weights (Wq, Wk, Wv, Wh, wo), the
inputs X (N, d_s, d) and the scales (tau0, tau1, m_qkv, m_h) written by bench_gram.py from tfconv's
own `init_params`, so both engines see the same weights and data.  The model below is
`tfconv.core.model.forward` written in jax.numpy, line for line.

IMPLEMENTATION: a name of `nt.NtkImplementation` (STRUCTURED_DERIVATIVES, JACOBIAN_CONTRACTION,
NTK_VECTOR_PRODUCTS or AUTO).  The kernel function is jitted, vmap_axes=0, trace_axes=(-1,) (K
summed over outputs; C = 1 here), float32.

Protocol: the N x N kernel in blocks of BLOCK samples, as `nt.batch` computes it (every block of the
matrix; neural-tangents does not skip the lower triangle).  A diagonal block is one call
kfn(X_b, None) (neural-tangents reuses the Jacobian of X_b), an off-diagonal block one call
kfn(X_a, X_b).  Each kind is called once untimed (tracing + XLA compilation, reported apart), then
REPEATS times; the best time of each kind counts.  N == BLOCK: the whole matrix is one diagonal call,
measured, not extrapolated.  N > BLOCK: total = n_b * t_diag + n_b (n_b - 1) * t_off with n_b = N /
BLOCK blocks per side (extrapolated from the two kinds of block; at these sizes the blocks would take
minutes each).  K of the first diagonal block is saved to OUT.npy (float64) so that bench_gram.py can
check it against tfconv's.  Prints one JSON line.
"""
from __future__ import annotations

import json
import resource
import sys
import time


def main(problem: str, out: str, block: int, repeats: int, implementation: str) -> dict:
    import types

    import jax
    import jax.numpy as jnp

    # neural_tangents/__init__ imports its TensorFlow interop (`experimental`: tensorflow + tf2jax), which
    # the empirical NTK does not use; an empty placeholder keeps TensorFlow out of this process.
    sys.modules.setdefault("neural_tangents.experimental", types.ModuleType("neural_tangents.experimental"))
    import neural_tangents as nt
    import numpy as np

    z = np.load(problem)
    sc = {k: float(z[k]) for k in ("tau0", "tau1", "m_qkv", "m_h")}
    params = {k: jnp.asarray(z[k], dtype=jnp.float32) for k in ("Wq", "Wk", "Wv", "Wh", "wo")}
    X = jnp.asarray(z["X"], dtype=jnp.float32)

    def f(p, x):  # tfconv.core.model.forward (no front end, mean pooling, hidden layer)
        q = sc["m_qkv"] * (x @ p["Wq"].T)
        k = sc["m_qkv"] * (x @ p["Wk"].T)
        a = jax.nn.softmax(sc["tau0"] * (q @ jnp.swapaxes(k, -1, -2)), axis=-1)
        v = sc["m_qkv"] * (x @ p["Wv"].T)
        h = jax.nn.relu(sc["m_h"] * ((a @ v) @ p["Wh"].T))
        return sc["tau1"] * (h.mean(axis=1) @ p["wo"])

    impl = getattr(nt.NtkImplementation, implementation)
    kfn = jax.jit(nt.empirical_ntk_fn(f, trace_axes=(-1,), vmap_axes=0, implementation=impl))
    N = X.shape[0]
    B = min(block, N)
    if N % B:
        raise SystemExit(f"N={N} is not a multiple of BLOCK={B}")
    n_b = N // B

    def timed(x1, x2):
        t = time.perf_counter()
        K = kfn(x1, x2, params).block_until_ready()
        first = time.perf_counter() - t
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            K = kfn(x1, x2, params).block_until_ready()
            ts.append(time.perf_counter() - t)
        return K, first, ts

    K, first_diag, t_diag = timed(X[:B], None)
    np.save(out, np.asarray(K, dtype=np.float64))
    first_off, t_off = 0.0, []
    if n_b > 1:
        _, first_off, t_off = timed(X[:B], X[B:2 * B])
    total = n_b * min(t_diag) + n_b * (n_b - 1) * (min(t_off) if t_off else 0.0)
    return {"time_s": total, "extrapolated": n_b > 1, "block": B, "blocks_per_side": n_b,
            "diag_times_s": t_diag, "off_times_s": t_off, "first_call_s": [first_diag, first_off],
            "implementation": implementation,
            "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "jax": jax.__version__, "neural_tangents": nt.__version__, "devices": str(jax.devices())}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])))
