"""The closing summary the workflow prints when it succeeds: where the outputs are, the verdicts of
the claims table, the wall time and the size of the results folder."""
from __future__ import annotations

import os
from collections import Counter
from typing import Tuple


def folder_size(root) -> Tuple[int, int]:
    """(bytes, files) under `root` (0, 0 when absent)."""
    total = files = 0
    for dirpath, _, names in os.walk(root):
        for n in names:
            try:
                total += os.stat(os.path.join(dirpath, n)).st_size
                files += 1
            except OSError:
                pass
    return total, files


def closing_summary(wf, seconds: float) -> str:
    """A few lines for the end of a successful run."""
    res = wf.results
    lines = [f"tfconv: done in {seconds / 60:.1f} min. Results in {res.root}/:"]
    n_fig = sum(1 for e, a in wf.figure_targets() if res.figure(e, a, "png").exists())
    figures = res.figure("<experiment>", "<analysis>", "png").with_suffix(".{png,pdf,csv}")
    lines.append(f"  figures   {figures}  ({n_fig} figures)")
    lines.append(f"  tables    {res.claims}, {res.slopes}")
    lines.append(f"  data      xarray.open_zarr('{res.aggregate('<experiment>')}')  (one per experiment)")
    if res.claims.exists():
        import pandas as pd

        claims = pd.read_csv(res.claims)
        counts = Counter(claims["verdict"])
        lines.append("  claims    " + ", ".join(f"{v}: {counts[v]}" for v in ("consistent", "refuted", "not measurable")))
        for k in sorted(set(claims["claim"])):
            sub = claims[claims["claim"] == k]
            lines.append(f"    claim {k}: " + ", ".join(f"{v} {n}" for v, n in Counter(sub["verdict"]).items()))
    size, files = folder_size(res.root)
    lines.append(f"  size      {size / 1e6:.0f} MB in {files} files")
    lines.append("  report    snakemake --report report.html  (figures, captions, the claims table)")
    lines.append("  status    tfconv status " + str(res.root))
    return "\n".join(lines)
