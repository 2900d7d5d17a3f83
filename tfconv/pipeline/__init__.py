"""The workflow's steps (`steps`: make_dataset, train_grid, assemble_gram, aggregate, plot, tables),
their logging (`logs`) and the verification of a results folder (`verify`).  The Snakemake rules
run `tasks/*.py`, which call these functions with the job's typed `tfconv.config.Workflow`."""
