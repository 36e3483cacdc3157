# Collect a cleaned segmentation once the source has one (found when the workflow is
# built; a later save by the radiologist changes the fingerprint and collects again),
# then measure VHI on it. The radiologist's file is only read.


rule collect_cleaned:
    input:
        proposal=LAYOUT.work_pattern("proposal.nii.gz"),
        receipt=LAYOUT.work_pattern("pushed.json"),
        stir=LAYOUT.work_pattern("stir.json"),
    output:
        cleaned=LAYOUT.work_pattern("cleaned.nii.gz"),
        sidecar=LAYOUT.work_pattern("cleaned.json"),
    params:
        source=source_json("cleaned"),
        session=session_json,
        fingerprint=cleaned_fingerprint,
    log:
        LAYOUT.log_pattern("collect_cleaned"),
    shell:
        "vhi --no-progress collect --source {params.source:q} --session {params.session:q}"
        " --like {input.proposal:q} --out {output.cleaned:q}"
        " --receipt {input.receipt:q} --stir-sidecar {input.stir:q} > {log:q} 2>&1"


rule measure_vhi:
    input:
        cleaned=LAYOUT.work_pattern("cleaned.nii.gz"),
    output:
        vhi=LAYOUT.work_pattern("vhi.json"),
    log:
        LAYOUT.log_pattern("measure_vhi"),
    shell:
        "vhi --no-progress measure --mask {input.cleaned:q} --out {output.vhi:q} > {log:q} 2>&1"
