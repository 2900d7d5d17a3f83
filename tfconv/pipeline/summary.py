"""The closing summary the workflow prints when it succeeds: where the outputs are, the verdicts of
the claims table, the wall time and the size of the results folder."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Sequence, Tuple


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


def closing_summary(wf, seconds: float, configfiles: Sequence[str] = ()) -> str:
    """A few lines for the end of a successful run; `configfiles`: the run's ``--configfile`` files, so
    that the report and status commands printed are the ones that read this run's results."""
    from ..analyses.claims import ROLE_CONTROL, ROLE_TEST, VERDICTS

    res = wf.results
    lines = [f"tfconv: done in {seconds / 60:.1f} min. Results in {res.root}/:"]
    n_fig = sum(1 for e, a in wf.figure_targets() if res.figure(e, a, "png").exists())
    figures = res.figure("<experiment>", "<analysis>", "png").with_suffix(".{png,pdf,csv}")
    lines.append(f"  figures   {figures}  ({n_fig} figures)")
    lines.append(f"  tables    {res.claims}, {res.slopes}, {res.synthesis}")
    lines.append(f"  data      xarray.open_zarr('{res.aggregate('<experiment>')}')  (one per experiment)")
    if res.claims.exists():
        import pandas as pd

        claims = pd.read_csv(res.claims)
        roles = claims["role"] if "role" in claims else pd.Series(ROLE_TEST, index=claims.index)
        for role, label in ((ROLE_TEST, "claims   "), (ROLE_CONTROL, "controls ")):
            sub = claims[roles == role]
            if role == ROLE_TEST or len(sub):
                counts = Counter(sub["verdict"])
                lines.append(f"  {label} " + ", ".join(f"{v}: {counts[v]}" for v in VERDICTS))
        tests = claims[roles == ROLE_TEST]
        for k in sorted(set(tests["claim"])):
            sub = tests[tests["claim"] == k]
            lines.append(f"    claim {k}: " + ", ".join(f"{v} {n}" for v, n in Counter(sub["verdict"]).items()))
    size, files = folder_size(res.root)
    lines.append(f"  size      {size / 1e6:.0f} MB in {files} files")
    config = "".join(f" --configfile {f}" for f in configfiles)
    report = f"{Path(configfiles[-1]).stem}.html" if configfiles else "report.html"
    lines.append(f"  report    snakemake{config} --report {report}  (figures, captions, the claims table)")
    lines.append("  status    tfconv status " + str(res.root))
    return "\n".join(lines)
