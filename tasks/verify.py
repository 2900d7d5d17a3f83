"""Rule verify: check every store of the results folder before the report (tfconv verify)."""
from tfconv.pipeline.steps import task_log, workflow_of
from tfconv.pipeline.verify import verify_results

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
with task_log(sm.log[0]):
    wf = workflow_of(sm)
    # damaged items are removed with the manifests that vouch for them: the next run recomputes them
    problems = verify_results(wf.config, report_path=sm.output.report, repair_damage=True)
    if problems:
        raise SystemExit(f"verification found {len(problems)} problem(s) and removed the damaged items; run the "
                         f"workflow again to recompute them (details: {sm.log[0]})")
