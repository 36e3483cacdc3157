# Push the proposal to the source, where a radiologist cleans it.


rule push_proposal:
    input:
        proposal=LAYOUT.work_pattern("proposal.nii.gz"),
        sidecar=LAYOUT.work_pattern("proposal.json"),
        stir=LAYOUT.work_pattern("stir.json"),
    output:
        receipt=LAYOUT.work_pattern("pushed.json"),
    params:
        source=source_json("push"),
        session=session_json,
    log:
        LAYOUT.log_pattern("push_proposal"),
    shell:
        "vhi --no-progress push --source {params.source:q} --session {params.session:q}"
        " --proposal {input.proposal:q} --sidecar {input.sidecar:q} --out {output.receipt:q}"
        " --stir-sidecar {input.stir:q}"
        " > {log:q} 2>&1"
