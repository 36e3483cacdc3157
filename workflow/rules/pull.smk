# Fetch each scan of a session from its source (STIR, T1W, manual normal-marrow mask).
# The copies are temporary: the source keeps the originals.


rule pull_scan:
    input:
        unpack(pull_scan_inputs),
    output:
        image=temp(LAYOUT.work_pattern("{role}.nii.gz")),
        sidecar=LAYOUT.work_pattern("{role}.json"),
    params:
        source=source_json("fetch"),
        session=session_json,
        grid=same_grid_flag,
    log:
        LAYOUT.log_pattern("pull_scan_{role}"),
    wildcard_constraints:
        role="stir|t1w|reference",
    shell:
        "vhi --no-progress pull --source {params.source:q} --session {params.session:q}"
        " --role {wildcards.role:q} --out {output.image:q} {params.grid} > {log:q} 2>&1"
