# Config loading, validation (once per job) and input functions shared by every rule.
import os
import sys

sys.path.insert(0, workflow.basedir)

from tfconv.analyses import caption_for
from tfconv.config import ConfigError, Workflow, load_config


if not workflow.overwrite_configfiles:
    # No --configfile given: run the embedded default. A --configfile replaces it entirely
    # (experiments are not merged with the default ones).
    configfile: os.path.join(workflow.basedir, "config", "config.yaml")


try:
    _validated = load_config(dict(config))
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None
# Jobs see the validated config (defaults filled) and type it without validating again.
config.clear()
config.update(_validated)
WF = Workflow.from_config(config)
RES = WF.results  # tfconv.store.Results: the one owner of every path below
EXPERIMENTS = list(WF.experiments)
ENV = "../../environment.yml"


wildcard_constraints:
    dataset="[A-Za-z0-9_-]+",
    experiment="[A-Za-z0-9_-]+",
    analysis="[a-z0-9_]+",


def res(rule, key):
    return WF.resources(rule)[key]


def dataset_store(wildcards):
    return str(RES.data(WF.experiment(wildcards.experiment).dataset.name))


def gram_manifest(wildcards):
    if WF.experiment(wildcards.experiment).gram:
        return str(RES.gram_manifest(wildcards.experiment))
    return []


def figure_caption(wildcards):
    """The registry's caption of the analysis, with the analysis and training settings filled in."""
    exp = WF.experiment(wildcards.experiment)
    settings = dict(WF.analysis, step_size=", ".join(str(s) for s in exp.steps),
                    checkpoint_epochs=", ".join(str(e) for e in exp.checkpoint_epochs))
    return caption_for(wildcards.analysis, settings)


def figure_targets(kind="png"):
    return [str(RES.figure(e, a, kind)) for e, a in WF.figure_targets()]


def all_targets():
    return figure_targets() + [str(RES.claims), str(RES.slopes), str(RES.verify_report)]
