# Figures (PNG + the CSV of their numbers), the claims and slopes tables, verification.


rule plot:
    input:
        aggregate=f"{R}/aggregate/{{experiment}}.zarr",
    output:
        png=report(
            f"{R}/figures/{{experiment}}/{{analysis}}.png",
            caption="../report/figure.rst",
            category="{experiment}",
            labels={"experiment": "{experiment}", "figure": "{analysis}"},
        ),
        csv=f"{R}/figures/{{experiment}}/{{analysis}}.csv",
        slopes=f"{R}/figures/{{experiment}}/{{analysis}}.slopes.csv",
        finding=f"{R}/figures/{{experiment}}/{{analysis}}.finding.txt",
    log:
        f"{R}/logs/plot/{{experiment}}/{{analysis}}.log",
    benchmark:
        f"{R}/benchmarks/plot/{{experiment}}/{{analysis}}.tsv"
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
        aggregates=expand(f"{R}/aggregate/{{experiment}}.zarr", experiment=EXPERIMENTS),
        slopes=slope_tables(),
    output:
        claims=report(f"{R}/tables/claims.csv", caption="../report/claims.rst", category="tables"),
        slopes=report(f"{R}/tables/slopes.csv", caption="../report/slopes.rst", category="tables"),
    log:
        f"{R}/logs/tables.log",
    benchmark:
        f"{R}/benchmarks/tables.tsv"
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
        figures=figure_targets(),
        claims=f"{R}/tables/claims.csv",
        slopes=f"{R}/tables/slopes.csv",
    output:
        report=f"{R}/verify.txt",
    log:
        f"{R}/logs/verify.log",
    benchmark:
        f"{R}/benchmarks/verify.tsv"
    threads: 1
    resources:
        mem_mb=res("verify", "mem_mb"),
        runtime=res("verify", "runtime"),
    conda:
        ENV
    script:
        "../../tasks/verify.py"
