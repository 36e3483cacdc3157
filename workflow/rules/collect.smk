# Collect a cleaned segmentation once the source has one (found when the workflow is
# built; a later save by the radiologist changes the fingerprint and collects again).
# The same job measures VHI on it (vhi.json, as `vhi measure` writes it) and draws the
# QC image with it (qc_cleaned.png, as `vhi qc-cleaned`): both take a fraction of a
# second, so one job per session instead of three. The radiologist's file is only read.


rule collect_cleaned:
    input:
        proposal=LAYOUT.work_pattern("proposal.nii.gz"),
        receipt=LAYOUT.work_pattern("pushed.json"),
        stir=LAYOUT.work_pattern("stir.json"),
        slices=LAYOUT.work_pattern(QC_FILES["slices"]),
    output:
        cleaned=LAYOUT.work_pattern("cleaned.nii.gz"),
        sidecar=LAYOUT.work_pattern("cleaned.json"),
        vhi=LAYOUT.work_pattern("vhi.json"),
        qc=LAYOUT.work_pattern(QC_FILES["cleaned"]),
    params:
        source=source_json("cleaned"),
        session=session_json,
        fingerprint=cleaned_fingerprint,
        work=lambda wildcards: LAYOUT.work,  # the run's readers database (a function: not a file prefix)
        vhi_role=lambda wildcards: SETTINGS.site(wildcards.site).double_read_vhi,
    log:
        LAYOUT.log_pattern("collect_cleaned"),
    shell:
        "vhi --no-progress collect --source {params.source:q} --session {params.session:q}"
        " --like {input.proposal:q} --out {output.cleaned:q} --vhi-out {output.vhi:q}"
        " --qc-slices {input.slices:q} --qc-out {output.qc:q}"
        " --receipt {input.receipt:q} --stir-sidecar {input.stir:q}"
        " --work-dir {params.work:q} --vhi-role {params.vhi_role} > {log:q} 2>&1"
