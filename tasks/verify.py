"""Rule verify: check every store of the results folder before the report (tfconv verify)."""
from tfconv.pipeline.steps import task_log, workflow_of
from tfconv.pipeline.verify import verify_results

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
with task_log(sm.log[0]):
    wf = workflow_of(sm)
    problems = verify_results(results=str(wf.results.root), report_path=sm.output.report)
    if problems:
        raise SystemExit(f"verification found {len(problems)} problem(s); see {sm.log[0]}")
