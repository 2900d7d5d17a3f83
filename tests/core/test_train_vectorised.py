"""Vectorised training of several runs of one width agrees with one train_gd call per run."""
import numpy as np
import pytest
import torch

from tfconv import ModelSpec, TrainConfig, make_synthetic, train_gd
from tfconv.core.train_vectorised import train_gd_vectorised

# float64 on tiny problems: batched and single-run kernels differ only in summation order, so the
# curves agree to ~1e-12 relative; 1e-9 leaves room for growth of rounding over 40 epochs.
RTOL = 1e-9


def _runs(step_size, epochs=40):
    torch.set_num_threads(1)
    ds = make_synthetic(10, 4, 6, seed=3)
    specs = [ModelSpec(width=12, d=6, d_s=4, scaling=s, init=i, dtype="float64")
             for s in ("inv_sqrt", "inv", 0.3) for i in ("lecun", "he", "ntk")]
    seeds = list(range(len(specs)))
    tc = TrainConfig(step_size=step_size, epochs=epochs, checkpoint_epochs=(0, epochs // 2))
    single = [train_gd(s, ds.X, ds.y, seed, tc) for s, seed in zip(specs, seeds)]
    batched = train_gd_vectorised(specs, ds.X, ds.y, seeds, tc)
    return single, batched


def test_vectorised_equals_single_runs():
    single, batched = _runs(step_size=0.1)  # every run converges (loss 0.006-0.48 at epoch 40)
    for a, b in zip(single, batched):
        assert a.status == b.status == "complete"
        for name in ("loss", "weight_change", "attention_deviation_mean", "attention_deviation_max"):
            np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=RTOL, atol=1e-14, err_msg=name)
        for k in a.weight_change_per:
            np.testing.assert_allclose(b.weight_change_per[k], a.weight_change_per[k], rtol=RTOL, atol=1e-14)
        for e in a.checkpoints:
            for k in a.checkpoints[e]:
                np.testing.assert_allclose(b.checkpoints[e][k], a.checkpoints[e][k], rtol=RTOL, atol=1e-14)


def test_diverged_runs_are_frozen_and_the_others_go_on():
    single, batched = _runs(step_size=2.0)  # 4 of 9 runs diverge, 5 converge
    statuses = [r.status for r in single]
    assert "diverged" in statuses and "complete" in statuses, statuses  # the step splits the group
    for a, b in zip(single, batched):
        assert (a.status, a.diverged_epoch) == (b.status, b.diverged_epoch)
        finite = np.isfinite(a.loss)
        np.testing.assert_array_equal(np.isfinite(b.loss), finite)
        np.testing.assert_allclose(b.loss[finite], a.loss[finite], rtol=1e-6)


def test_vectorised_rejects_mixed_widths():
    ds = make_synthetic(4, 3, 5, seed=0)
    specs = [ModelSpec(width=8, d=5, d_s=3), ModelSpec(width=16, d=5, d_s=3)]
    with pytest.raises(ValueError, match="share width"):
        train_gd_vectorised(specs, ds.X, ds.y, [0, 1], TrainConfig(epochs=2))


@pytest.mark.slow
def test_ray_grid_vectorised_matches_one_task_per_point(tmp_path, monkeypatch):
    """ray.vectorise: one Ray task per width group on a real local Ray cluster; every stored run equals
    (to float32 rounding of a different summation order) the run of one task per point."""
    from tfconv import store
    from tfconv.cluster.ray_grid import GridJob, RayTasks, run_grid
    from tfconv.config import load_workflow

    # auth off in this process: Ray fixes its auth mode once per process, and this session's other Ray
    # tests join `ray start` clusters started with RAY_AUTH_MODE=disabled (tests/clusters.py); the
    # default token mode is checked in a process of its own (tests/cluster/test_loopback.py).
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    wf = load_workflow({
        "datasets": {"s": {"kind": "synthetic", "n_samples": 8, "d_s": 3, "d": 4}},
        "experiments": {"g": {"dataset": "s", "grid": {"width": [8, 16], "init": ["lecun", "ntk"], "seed": [0, 1]},
                              "train": {"epochs": 15, "checkpoint_epochs": [0, 15]}, "gram": False}},
    })
    exp = wf.experiment("g")
    data = tmp_path / "data.zarr"
    store.write_dataset(data, make_synthetic(8, 3, 4, seed=0))
    points = exp.points
    per_point, grouped = tmp_path / "a.zarr", tmp_path / "b.zarr"
    res_a = run_grid(GridJob(exp, str(data), str(per_point)), points, num_cpus=2)
    res_b = run_grid(GridJob(exp, str(data), str(grouped)), points, num_cpus=2, tasks=RayTasks(vectorise=True))
    assert len(res_a) == len(res_b) == len(points)
    # the Ray task wrapper passes the node id into every unit of work, vectorised ones included
    for res in (res_a, res_b):
        assert len({r["node_id"] for r in res}) == 1 and None not in {r["node_id"] for r in res}
    for p in points:
        a, b = store.read_run(per_point, p.run_id), store.read_run(grouped, p.run_id)
        assert a["attrs"]["status"] == b["attrs"]["status"] == "complete"
        assert b["attrs"]["provenance"]["vectorised"] == 4  # 2 inits x 2 seeds share a width
        # float32: relative differences of ~1e-6 per epoch compound slowly over 15 epochs
        np.testing.assert_allclose(b["curves"]["loss"], a["curves"]["loss"], rtol=1e-4)
