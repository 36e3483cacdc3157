# VHI cohort workflow: STIR + T1W sessions -> disease region -> lesion proposal ->
# pushed for cleaning -> cleaned masks collected -> cohort VHI tables.
# Run:  snakemake --profile profiles/local      (docs/usage.md)
import os

from snakemake.utils import min_version

from vhi.config.image import container_uri

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config.yaml")
# Validated against the schema shipped in the vhi package (defaults filled in) by
# vhi.config.load.resolve_config in workflow/rules/common.smk.


include: "workflow/rules/common.smk"


# The image every rule runs in with --software-deployment-method apptainer: the config's
# `image` (default: the OCI archive scripts/build-image.sh writes). The local profile
# runs the venv instead.
container: container_uri(SETTINGS.image, workflow.basedir)


include: "workflow/rules/pull.smk"
include: "workflow/rules/segment.smk"
include: "workflow/rules/propose.smk"
include: "workflow/rules/push.smk"
include: "workflow/rules/collect.smk"
include: "workflow/rules/qc.smk"
include: "workflow/rules/tables.smk"


# Every session's files too, not only the tables: a session file removed (or one a
# fault left out) is made again by the next run, whatever results/ holds.
rule all:
    input:
        **RESULTS,
        sessions=all_session_files,
        qc=all_qc_files,
    default_target: True
