# Fetch a session's scans from its source in one job: the T1W, the STIR (checked against
# the T1W's grid), the manual normal-marrow mask. One rule per set of scans a session has
# (vhi.cohort.layout.PULL_RULES), tried in the order below: a rule that does not pull this
# session's set asks for a file that never exists (pull_only), so Snakemake takes the next.
# The copies are temporary: the source keeps the originals. A scan replaced at the same
# path (another size or modification time: the plan's scan identity) is pulled again.


for _rule, _roles in PULL_RULES.items():

    rule:
        name:
            _rule
        input:
            pull_only(_rule),
        output:
            **{role: temp(LAYOUT.work_pattern(f"{role}.nii.gz")) for role in _roles},
            **{f"{role}_sidecar": LAYOUT.work_pattern(f"{role}.json") for role in _roles},
        params:
            source=source_json("fetch"),
            session=session_json,
            identity=scan_identity,
            scans=pull_scan_args,
        log:
            LAYOUT.log_pattern(PULL_LOG),
        # the same command for every set of scans: a loop variable here would be read
        # when the job runs, not when the rule is made
        shell:
            "vhi --no-progress pull --source {params.source:q} --session {params.session:q}"
            " {params.scans} > {log:q} 2>&1"


ruleorder: pull_scans_stir_reference > pull_scans_stir > pull_scans
