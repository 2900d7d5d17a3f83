# Figures (PNG + PDF + the CSV of their numbers), the claims and slopes tables (CSV + HTML), verification.
#
# The report: the landing page (workflow/report/workflow.rst) prints the `landing` parameter of rule tables,
# each figure's caption (workflow/report/figure.rst) the `caption` parameter of rule plot. Both are read from
# the outputs when the report is made (the finding the plot step wrote, tables/synthesis.json), and neither
# is a plain value, so they never make a finished job rerun. Categories: "Claims" (the tables) sorts before
# "Experiment <name>" (its figures); each has one explicit subcategory, so none shows a level "Other".
from tfconv.analyses.captions import tables_caption_values
from tfconv.pipeline.report_tables import LandingPage

# plot_caption (the figure.rst caption of each figure) is in common.smk with the other input functions.

#: what workflow/report/claims.rst and slopes.rst print (confidence level, thresholds)
TABLES_CAPTION = tables_caption_values(WF.analysis)
CLAIMS_CATEGORY = "Claims"


rule plot:
    input:
        aggregate=str(RES.aggregate("{experiment}")),
    output:
        png=report(
            str(RES.figure("{experiment}", "{analysis}", "png")),
            caption="../report/figure.rst",
            category="Experiment {experiment}",
            subcategory="figures",
            # one label: each figure is a row of its experiment's category (a second label would
            # become a toggle that shows one figure at a time)
            labels={"figure": "{analysis}"},
        ),
        pdf=str(RES.figure("{experiment}", "{analysis}", "pdf")),
        csv=str(RES.figure("{experiment}", "{analysis}", "csv")),
        slopes=str(RES.figure("{experiment}", "{analysis}", "slopes")),
        finding=str(RES.figure("{experiment}", "{analysis}", "finding")),
    params:
        caption=plot_caption,  # what the report caption (workflow/report/figure.rst) prints
    log:
        str(RES.log("plot", "{experiment}", "{analysis}")),
    benchmark:
        str(RES.benchmark("plot", "{experiment}", "{analysis}"))
    threads: 1
    resources:
        mem_mb=res("plot", "mem_mb"),
        runtime=res("plot", "runtime"),
    conda:
        ENV
    script:
        "../../tasks/plot.py"


rule tables:
    input:
        aggregates=[str(RES.aggregate(e)) for e in EXPERIMENTS],
        slopes=figure_targets("slopes"),
    output:
        # the HTML pages are shown inline by the report; the CSVs are the same tables, for download
        claims_html=report(
            str(RES.claims_html),
            caption="../report/claims.rst",
            category=CLAIMS_CATEGORY,
            subcategory="tables",
            labels={"table": "claims", "view": "table"},
        ),
        slopes_html=report(
            str(RES.slopes_html),
            caption="../report/slopes.rst",
            category=CLAIMS_CATEGORY,
            subcategory="tables",
            labels={"table": "slopes", "view": "table"},
        ),
        claims=report(
            str(RES.claims),
            caption="../report/claims.rst",
            category=CLAIMS_CATEGORY,
            subcategory="tables",
            labels={"table": "claims", "view": "table (CSV download)"},
        ),
        slopes=report(
            str(RES.slopes),
            caption="../report/slopes.rst",
            category=CLAIMS_CATEGORY,
            subcategory="tables",
            labels={"table": "slopes", "view": "table (CSV download)"},
        ),
        synthesis=str(RES.synthesis),
        synthesis_json=str(RES.synthesis_json),
        manifest=str(RES.tables_manifest),
    params:
        # what the report captions (workflow/report/claims.rst, slopes.rst) print
        **TABLES_CAPTION,
        # what the report's landing page (workflow/report/workflow.rst) prints
        landing=lambda wildcards: LandingPage.of(WF),
    log:
        str(RES.log("tables")),
    benchmark:
        str(RES.benchmark("tables"))
    threads: 1
    resources:
        mem_mb=res("tables", "mem_mb"),
        runtime=res("tables", "runtime"),
    conda:
        ENV
    script:
        "../../tasks/tables.py"


rule verify:
    input:
        # every manifest and aggregate: whenever a store is recomputed, verify runs again
        figures=figure_targets(),
        claims=str(RES.claims),
        slopes=str(RES.slopes),
        tables=str(RES.tables_manifest),
        train=[str(RES.train_manifest(e)) for e in EXPERIMENTS],
        gram=[str(RES.gram_manifest(e)) for e in WF.gram_experiments()],
        aggregates=[str(RES.aggregate(e)) for e in EXPERIMENTS],
    output:
        report=str(RES.verify_report),
    log:
        str(RES.log("verify")),
    benchmark:
        str(RES.benchmark("verify"))
    threads: 1
    resources:
        mem_mb=res("verify", "mem_mb"),
        runtime=res("verify", "runtime"),
    conda:
        ENV
    script:
        "../../tasks/verify.py"
