# Config loading, validation (once per job) and input functions shared by every rule.
import os
import sys

sys.path.insert(0, workflow.basedir)

from tfconv.config import ConfigError, Workflow, load_config
from tfconv.config.estimate import estimate, estimate_lines
from tfconv.config.loader import config_name, merge_over_default
from tfconv.config.yaml_io import read_yaml
from snakemake.exceptions import WorkflowError
from tfconv.cluster.slurm import slurm_job_cpus  # SLURM queries only: no Ray import at parse time


DEFAULT_CONFIG = os.path.join(workflow.basedir, "config", "config.yaml")
if not workflow.overwrite_configfiles:
    # No --configfile given: run the embedded default.
    configfile: DEFAULT_CONFIG


try:
    # Snakemake has parsed every --configfile with its own YAML loader already; read them again with
    # ours (tfconv.config.yaml_io.read_yaml) so that duplicate keys and alias bombs are refused before
    # anything walks the config.
    for _configfile in workflow.overwrite_configfiles:
        read_yaml(_configfile)
    # A --configfile is merged over the embedded default for every section except `experiments`,
    # which is the user's alone; without `results:` it writes to results-<its name>/, never to the
    # default run's folder (README: "Your own grid"; `tfconv validate` merges the same way).
    _user = dict(config)
    if workflow.overwrite_configfiles:
        _user = merge_over_default(_user, read_yaml(DEFAULT_CONFIG), name=config_name(workflow.overwrite_configfiles))
    _validated = load_config(_user)
except (ConfigError, ValueError) as exc:
    raise WorkflowError(str(exc)) from None
# Jobs see the validated config (defaults filled) and type it without validating again.
config.clear()
config.update(_validated)
WF = Workflow.from_config(config)
if workflow.is_main_process:  # the size of the work, once, before any job (jobs re-parse this file)
    for _line in estimate_lines(estimate(config)):
        print(_line, file=sys.stderr)
RES = WF.results  # tfconv.store.Results: the one owner of every path below
try:
    RES.claim(os.getcwd())  # one workflow per results folder
except PermissionError as exc:
    raise WorkflowError(str(exc)) from None
EXPERIMENTS = list(WF.experiments)
ENV = "../../environment.yml"


wildcard_constraints:
    dataset="[A-Za-z0-9_-]+",
    experiment="[A-Za-z0-9_-]+",
    analysis="[a-z0-9_]+",


def res(rule, key):
    return WF.resources(rule)[key]


def cluster_threads(rule):
    """Threads of a step that starts a cluster (train_grid starts Ray, assemble_gram starts Dask): the config's
    resources.<rule>.threads when given, else every core given to Snakemake (--cores)."""
    given = (WF.config.get("resources", {}).get(rule) or {}).get("threads")
    if given:
        return int(given)
    in_job = slurm_job_cpus()
    if in_job:  # inside a job the SLURM executor submitted: the CPUs it asked for, not the job's --cores
        return in_job
    try:
        cores = workflow.cores
    except WorkflowError:  # no --cores (e.g. `--report`, `--lint`): nothing runs, the default stands
        cores = None
    return int(cores or res(rule, "threads"))


def dataset_store(wildcards):
    return str(RES.data(WF.experiment(wildcards.experiment).dataset.name))


def gram_manifest(wildcards):
    if WF.experiment(wildcards.experiment).gram:
        return str(RES.gram_manifest(wildcards.experiment))
    return []


def figure_targets(kind="png"):
    return [str(RES.figure(e, a, kind)) for e, a in WF.figure_targets()]


def all_targets():
    tables = [RES.claims, RES.slopes, RES.claims_html, RES.slopes_html]
    return figure_targets() + [str(p) for p in tables] + [str(RES.verify_report)]


def plot_caption(wildcards):
    """What workflow/report/figure.rst prints: finding, the analysis's caption, setting, confidence
    (tfconv.analyses.captions.FigureCaption, built from the typed experiment)."""
    from tfconv.analyses.captions import figure_caption

    return figure_caption(WF.experiment(wildcards.experiment), wildcards.analysis, WF.analysis,
                          finding_file=RES.figure(wildcards.experiment, wildcards.analysis, "finding"))
