"""Rule verify: check every store of the results folder before the report (tfconv verify)."""
from tfconv.config import load_config
from tfconv.pipeline import task_log
from tfconv.verify import verify_results

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
with task_log(sm.log[0]):
    problems = verify_results(load_config(dict(sm.config)), report_path=sm.output.report)
    if problems:
        raise SystemExit(f"verification found {len(problems)} problem(s); see {sm.log[0]}")
