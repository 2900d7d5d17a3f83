# tfconv: reproduce "On the Convergence of Encoder-only Shallow Transformers" (Wu et al., NeurIPS 2023).
#
#   snakemake --cores 2                          # the embedded default config (config/config.yaml)
#   snakemake --cores 2 --configfile my.yaml     # your own grid (merged over the default, experiments replaced)
#   snakemake --report report.html               # figures, captions and tables in one page
#
# data -> train_grid (Ray) -> assemble_gram (Dask -> Zarr) -> aggregate -> plot / tables -> verify
import time

from snakemake.utils import min_version

min_version("9.0")
_STARTED = time.time()


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/gram.smk"
include: "workflow/rules/figures.smk"


report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        all_targets(),


onsuccess:
    from tfconv.pipeline.summary import closing_summary

    print(closing_summary(WF, time.time() - _STARTED, [str(f) for f in workflow.overwrite_configfiles]))
