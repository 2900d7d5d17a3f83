"""The status of a training run, as recorded in the train store and the aggregate (torch-free)."""

#: Trained for the whole epoch budget.
STATUS_COMPLETE = "complete"
#: Stopped when the loss became non-finite or exceeded divergence_factor x loss_0.
STATUS_DIVERGED = "diverged"
#: Declared by the grid but absent from the store (only in aggregates).
STATUS_MISSING = "missing"
#: Wider than train.max_gd_width: K_0 and the linearised prediction recorded, no gradient descent.
STATUS_KERNEL_ONLY = "kernel_only"
