"""GPU check: the model, gradient descent and both NTK engines on CUDA against the CPU, and two timings.

    python benchmarks/gpu_check.py                 # ~3 min on one GPU (plus the CPU references)
    python benchmarks/gpu_check.py --json gpu.json

Without a CUDA device it prints why and exits with status 3 before any work (nothing in the tests needs a
GPU; this script is what to run when one is at hand).  With one, every check compares the same float64
(or float32) computation on the CPU and on the GPU, with the same initialisation:

| check | tolerance |
|---|---|
| forward f(X) of the paper's model (width 256, N = 64), float64 | max abs diff <= 1e-10 max abs f |
| gradient descent, 20 epochs (`tfconv.core.train.train_gd`), float64 loss curve | rel diff <= 1e-10 per epoch |
| NTK, structured engine, float64 / float32 | max abs diff <= 1e-10 / 1e-5 max abs K |
| NTK, exact engine (Jacobian contraction), float64 / float32 | max abs diff <= 1e-10 / 1e-5 max abs K |

Timings (printed as a table, with the CPU's in the same run): the structured engine on a 4,096 x 4,096
float64 and float32 Gram at width 1024 (GFLOP/s from `flop_count`, against the GPU's matmul rate), and
one paper-scale training run (config/paper.yaml's synthetic experiment: N = 100, width 4096, LeCun,
tau0 = d_m^-1/2, 1,000 epochs, float32, at half its stability limit from K_0).  Exit status 0 when every
check passes, 1 when one fails, 3 without a CUDA device.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402

NO_DEVICE = 3


def cuda_or_exit() -> str:
    import torch

    if not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device: torch.cuda.is_available() is False (torch {torch.__version__}, "
              f"built with CUDA {torch.version.cuda or 'none'}; CUDA_VISIBLE_DEVICES="
              f"{os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}). Nothing was checked; run this on a machine "
              "with a GPU.", file=sys.stderr)
        sys.exit(NO_DEVICE)
    return torch.cuda.get_device_name(0)


def _sync():
    import torch

    torch.cuda.synchronize()


def _data(n: int, d_s: int = 8, d: int = 32, seed: int = 0):
    from tfconv.data import make_synthetic

    ds = make_synthetic(n_samples=n, d_s=d_s, d=d, seed=seed)
    return ds.X, ds.y


def _spec(width: int, dtype: str, d_s: int = 8, d: int = 32):
    from tfconv.core.model import ModelSpec

    return ModelSpec(width=width, d=d, d_s=d_s, scaling="inv_sqrt", init="lecun", dtype=dtype)


def check_forward() -> dict:
    import torch

    from tfconv.core.model import forward, init_params

    X, _ = _data(64)
    spec = _spec(256, "float64")
    p = init_params(spec, 0)
    with torch.no_grad():
        f_cpu = forward(p, torch.as_tensor(X), spec.scales()).numpy()
        f_gpu = forward({k: v.cuda() for k, v in p.items()}, torch.as_tensor(X, device="cuda"), spec.scales()).cpu().numpy()
    err = float(np.abs(f_gpu - f_cpu).max() / np.abs(f_cpu).max())
    return {"check": "forward, float64", "error": err, "tolerance": 1e-10, "ok": err <= 1e-10}


def check_gd() -> dict:
    from tfconv.core.model import init_params
    from tfconv.core.train import TrainConfig, train_gd

    X, y = _data(64)
    spec = _spec(256, "float64")
    cfg = TrainConfig(step_size=0.5, epochs=20)
    cpu = train_gd(spec, X, y, seed=0, train=cfg, params=init_params(spec, 0))
    gpu = train_gd(spec, X, y, seed=0, train=cfg, params=init_params(spec, 0), device="cuda")
    err = float(np.max(np.abs(np.asarray(gpu.loss) - np.asarray(cpu.loss)) / np.abs(np.asarray(cpu.loss))))
    return {"check": "gradient descent, 20 epochs, float64", "error": err, "tolerance": 1e-10, "ok": err <= 1e-10}


def check_engine(engine: str, dtype: str) -> dict:
    from tfconv.core.model import init_params
    from tfconv.core.ntk import ntk_block

    X, _ = _data(96 if engine == "exact" else 300)
    spec = _spec(64 if engine == "exact" else 256, dtype)
    p = init_params(spec, 0)
    K_cpu = ntk_block(p, spec, X, None, engine=engine)
    K_gpu = ntk_block({k: v.cuda() for k, v in p.items()}, spec, X, None, engine=engine)
    tol = 1e-10 if dtype == "float64" else 1e-5
    err = float(np.abs(K_gpu - K_cpu).max() / np.abs(K_cpu).max())
    return {"check": f"NTK, {engine} engine, {dtype}", "error": err, "tolerance": tol, "ok": err <= tol}


def time_engine(dtype: str, n: int, width: int, device: str) -> dict:
    import torch

    from tfconv.core.model import init_params
    from tfconv.core.ntk_structured import flop_count, ntk_block_structured

    X, _ = _data(n)
    spec = _spec(width, dtype)
    p = {k: v.to(device) for k, v in init_params(spec, 0).items()}
    ntk_block_structured(p, spec, X[:256], chunk_size=256)
    if device == "cuda":
        _sync()
    t = time.perf_counter()
    ntk_block_structured(p, spec, X, chunk_size=256 if device == "cpu" else 1024)
    if device == "cuda":
        _sync()
    s = time.perf_counter() - t
    gf = flop_count(spec, n, None, chunk_size=256 if device == "cpu" else 1024)["total"] / s / 1e9
    a = torch.randn(4096, 4096, dtype=getattr(torch, dtype), device=device)
    a @ a
    if device == "cuda":
        _sync()
    t = time.perf_counter()
    for _ in range(3):
        a @ a
    if device == "cuda":
        _sync()
    mm = 3 * 2 * 4096 ** 3 / (time.perf_counter() - t) / 1e9
    return {"what": f"structured engine, N = {n}, width {width}, {dtype}, {device}", "seconds": s, "gflops": gf,
            "matmul_gflops": mm, "ratio": gf / mm}


def time_training(device: str, epochs: int = 1000) -> dict:
    from tfconv.core.kernel import init_kernel
    from tfconv.core.model import init_params
    from tfconv.core.train import TrainConfig, train_gd

    X, y = _data(100)
    spec = _spec(4096, "float32")
    p0 = init_params(spec, 0)
    t = time.perf_counter()
    ik = init_kernel(spec, X, y, p0, "0.5limit", "mean")
    t_k = time.perf_counter() - t
    t = time.perf_counter()
    run = train_gd(spec, X, y, seed=0, train=TrainConfig(step_size=ik.step_size, epochs=epochs, stop_ratio=None),
                   params=p0, device=device)
    if device == "cuda":
        _sync()
    s = time.perf_counter() - t
    return {"what": f"paper-scale run (N = 100, width 4096, {epochs} epochs, float32) on {device}", "seconds": s,
            "epochs_per_s": epochs / s, "kernel_seconds": t_k, "final_loss_ratio": float(run.loss[-1] / run.loss[0])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--cpu-epochs", type=int, default=100, help="epochs of the CPU reference training run")
    args = ap.parse_args(argv)
    name = cuda_or_exit()
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    print(f"# GPU check on {name} (torch {torch.__version__}, CUDA {torch.version.cuda})\n")
    checks = [check_forward(), check_gd()]
    for engine in ("structured", "exact"):
        for dtype in ("float64", "float32"):
            checks.append(check_engine(engine, dtype))
    print("| check | max error | tolerance | result |\n|---|---:|---:|---|")
    for c in checks:
        print(f"| {c['check']} | {c['error']:.3g} | {c['tolerance']:.0e} | {'ok' if c['ok'] else 'FAILED'} |")
    timings = [time_engine(dt, 4096, 1024, "cuda") for dt in ("float64", "float32")]
    timings += [time_engine(dt, 1024, 1024, "cpu") for dt in ("float64", "float32")]
    print("\n| engine timing | seconds | GFLOP/s | matmul GFLOP/s | ratio |\n|---|---:|---:|---:|---:|")
    for t in timings:
        print(f"| {t['what']} | {t['seconds']:.2f} | {t['gflops']:.1f} | {t['matmul_gflops']:.1f} | {t['ratio']:.2f} |")
    runs = [time_training("cuda"), time_training("cpu", args.cpu_epochs)]
    print("\n| training | seconds | epochs/s | K_0 seconds | loss_E / loss_0 |\n|---|---:|---:|---:|---:|")
    for t in runs:
        print(f"| {t['what']} | {t['seconds']:.1f} | {t['epochs_per_s']:.1f} | {t['kernel_seconds']:.1f} | "
              f"{t['final_loss_ratio']:.3g} |")
    ok = all(c["ok"] for c in checks)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "checks": checks, "engine": timings, "training": runs, "ok": ok}, f, indent=1)
    print("\nall checks passed" if ok else "\nSOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
