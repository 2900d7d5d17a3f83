# tfconv: reproduce "On the Convergence of Encoder-only Shallow Transformers" (Wu et al., NeurIPS 2023).
#
#   snakemake --cores 2                          # the embedded default config (config/config.yaml)
#   snakemake --cores 2 --configfile my.yaml     # your own grid (replaces the default entirely)
#   snakemake --report report.html               # figures, captions and tables in one page
#
# data -> train_grid (Ray) -> assemble_gram (Dask -> Zarr) -> aggregate -> plot / tables -> verify
from snakemake.utils import min_version

min_version("9.0")


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
