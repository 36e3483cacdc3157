# Lesion proposal (labels 0/1/2) from the STIR's two thresholds, and its agreement with
# independent reader masks where the source has them.


rule propose_lesions:
    input:
        unpack(propose_inputs),
    output:
        proposal=LAYOUT.work_pattern("proposal.nii.gz"),
        sidecar=LAYOUT.work_pattern("proposal.json"),
        reference=LAYOUT.work_pattern("proposal_reference.nii.gz"),
    params:
        reference=reference_arg,
        scan=SESSION_LABEL,
    log:
        LAYOUT.log_pattern("propose_lesions"),
    benchmark:
        LAYOUT.benchmark_pattern("propose_lesions")
    shell:
        "vhi --no-progress propose --stir {input.stir:q} --disease-region {input.disease_region:q}"
        " --reference {params.reference:q} --reference-out {output.reference:q}"
        " --out {output.proposal:q} --scan {params.scan:q}"
        " > {log:q} 2>&1"


rule measure_agreement:
    input:
        unpack(reader_masks),
        proposal=LAYOUT.work_pattern("proposal.nii.gz"),
    output:
        agreement=LAYOUT.work_pattern("agreement.json"),
    params:
        reader_masks=reader_args,
        scan=SESSION_LABEL,
    log:
        LAYOUT.log_pattern("measure_agreement"),
    shell:
        "vhi --no-progress agreement --proposal {input.proposal:q} {params.reader_masks}"
        " --scan {params.scan:q} --out {output.agreement:q} > {log:q} 2>&1"
