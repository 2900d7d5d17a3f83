# Config loading, validation and input functions shared by every rule.
import os
import sys

sys.path.insert(0, workflow.basedir)

from tfconv.config import ConfigError, analysis_needs_epoch0, load_config
from tfconv.config import resources as rule_resources


if not workflow.overwrite_configfiles:
    # No --configfile given: run the embedded default. A --configfile replaces it entirely
    # (experiments are not merged with the default ones).
    configfile: os.path.join(workflow.basedir, "config", "config.yaml")


try:
    CFG = load_config(dict(config))
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

R = CFG["results"]
EXPERIMENTS = list(CFG["experiments"])
GRAM_EXPERIMENTS = [e for e in EXPERIMENTS if CFG["experiments"][e]["gram"]]
ENV = "../../environment.yml"


wildcard_constraints:
    dataset="[A-Za-z0-9_-]+",
    experiment="[A-Za-z0-9_-]+",
    analysis="[a-z0-9_]+",


def res(rule, key):
    return rule_resources(CFG, rule)[key]


def dataset_store(wildcards):
    return f"{R}/data/{CFG['experiments'][wildcards.experiment]['dataset']}.zarr"


def gram_manifest(wildcards):
    if CFG["experiments"][wildcards.experiment]["gram"]:
        return f"{R}/gram/{wildcards.experiment}.json"
    return []


def figure_targets():
    return [
        f"{R}/figures/{e}/{a}.png"
        for e in EXPERIMENTS
        for a in CFG["experiments"][e]["analyses"]
    ]


def slope_tables():
    return [
        f"{R}/figures/{e}/{a}.slopes.csv"
        for e in EXPERIMENTS
        for a in CFG["experiments"][e]["analyses"]
    ]


def all_targets():
    return figure_targets() + [
        f"{R}/tables/claims.csv",
        f"{R}/tables/slopes.csv",
        f"{R}/verify.txt",
    ]
