# The cohort plan (sessions of every site, from the validated config and sheets) and
# the small input/params functions the rules share. Logic lives in vhi.cohort and vhi.sources.
import json
import os
import shlex

from snakemake.exceptions import WorkflowError

from vhi.cohort.layout import PULL_LOG, PULL_RULES, QC_FILES, RESULT_FILES, Layout
from vhi.cohort.plan import (PLAN_DIR, PLAN_ENV, load_plan, plan_cohort, plan_digest, run_plan_path,
                             save_run_plan, wildcard_constraints)
from vhi.config.load import resolve_config
from vhi.provenance import mark_run
from vhi.sources import source_class

# The shared data (demo cohort, model weights) defaults to the folder beside the project,
# wherever the run's --directory is; the vhi commands of the run inherit it.
os.environ.setdefault("VHI_SHARED", os.path.join(workflow.basedir, "..", "shared"))
SETTINGS = resolve_config(config)
LAYOUT = Layout.from_settings(SETTINGS)
# Every vhi command of this run records the run and the config it came from.
mark_run(SETTINGS.digest)
# One plan per run. The main process asks every source for its sessions once; the plan is
# kept (named by its digest) only when the run starts (onstart: never by a dry run or
# lint), and job processes (a cluster job re-reads this Snakefile) read that file, so no
# other invocation, whatever sheet it plans, can change what a running run's jobs see.
if workflow.is_main_process:
    PLAN = {p.key: p for p in plan_cohort(SETTINGS)}
    os.environ[PLAN_ENV] = str(run_plan_path(os.path.abspath(LAYOUT.work), list(PLAN.values())))
elif os.environ.get(PLAN_ENV):
    PLAN = {p.key: p for p in load_plan(os.environ[PLAN_ENV])}
else:
    raise WorkflowError(f"{PLAN_ENV} is not set: a job process cannot know its run's plan "
                        "(the executor did not pass the environment)")
PLAN_DIGEST = plan_digest(list(PLAN.values()))


envvars:
    PLAN_ENV,


onstart:
    save_run_plan(list(PLAN.values()), LAYOUT.work)


RESULTS = {key: str(LAYOUT.result(key)) for key in RESULT_FILES}
SESSION_LABEL = "{site}/{subject}/{session}"


wildcard_constraints:
    **wildcard_constraints(list(PLAN.values())),


def planned(wildcards):
    return PLAN[SESSION_LABEL.format(**wildcards)]


def session_json(wildcards):
    """The session record (ids, timepoint, scan URIs) the vhi commands act on."""
    return json.dumps(planned(wildcards).session.to_dict(), sort_keys=True)


def source_json(operation):
    """Params function: the part of the site's source spec that `operation` depends on."""

    def spec(wildcards):
        site = SETTINGS.site(wildcards.site)
        return json.dumps(source_class(site.source).spec_for(site.source, operation),
                          sort_keys=True)

    return spec


def pull_only(rule):
    """Input function of a pull rule: nothing for the sessions whose scans it pulls, else a
    file that never exists, so that Snakemake takes the rule of the session's set."""
    absent = [os.path.join(LAYOUT.work, PLAN_DIR, f"not-pulled-by-{rule}")]

    def only(wildcards):
        return [] if planned(wildcards).pull_rule() == rule else absent

    return only


def pull_scan_args(wildcards, output):
    """``--scan ROLE=PATH`` for each scan the pull rule writes, T1W first (vhi pull)."""
    return " ".join(f"--scan {shlex.quote(f'{role}={output[role]}')}"
                    for role in ("t1w", "stir", "reference") if role in output.keys())


def propose_inputs(wildcards):
    files = {name: LAYOUT.work_pattern(f"{name}.nii.gz").format(**wildcards)
             for name in ("stir", "disease_region")}
    if planned(wildcards).reference == "manual":
        files["reference"] = LAYOUT.work_pattern("reference.nii.gz").format(**wildcards)
    return files


def reference_arg(wildcards, input):
    return input.reference if "reference" in input.keys() else "auto"


def reader_masks(wildcards):
    """Reader masks on the source (read only): their changes rerun the agreement."""
    return {f"reader_{name}": path for name, path in planned(wildcards).reader_masks.items()}


def reader_args(wildcards):
    return " ".join(f"--reader {shlex.quote(f'{name}={path}')}"
                    for name, path in planned(wildcards).reader_masks.items())


def cleaned_fingerprint(wildcards):
    """Changes when a radiologist saves the cleaned mask again: collect reruns."""
    return json.dumps(planned(wildcards).cleaned, sort_keys=True)


def session_final_files(p):
    return [str(LAYOUT.work_file(p.session, name)) for name in p.final_files()]


def all_session_files(wildcards):
    return [f for p in PLAN.values() for f in session_final_files(p)]


# QC images (qc.smk)
def qc_inputs(wildcards):
    names = ["t1w", "disease_region"]
    if planned(wildcards).has_stir:
        names += ["stir", "proposal"]
    return {name: LAYOUT.work_pattern(f"{name}.nii.gz").format(**wildcards) for name in names}


def qc_scan_args(wildcards, input):
    return " ".join(f"--{name} {shlex.quote(input[name])}" for name in ("stir", "proposal")
                    if name in input.keys())


def all_qc_files(wildcards):
    return [str(LAYOUT.work_file(p.session, name)) for p in PLAN.values() for name in p.qc_files()]
