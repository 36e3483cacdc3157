# QC images per session (vhi.results.qc): after the proposal (the disease region for a
# T1W-only session) the slices with the most proposal voxels, with the region, the
# proposal and the T1W's region; after collection the same slices with the cleaned mask
# (drawn by the collect job, collect.smk).
# Input functions: qc_inputs, qc_scan_args, all_qc_files (common.smk).


rule draw_qc:
    input:
        unpack(qc_inputs),
    output:
        image=LAYOUT.work_pattern(QC_FILES["image"]),
        slices=LAYOUT.work_pattern(QC_FILES["slices"]),
    params:
        scans=qc_scan_args,
        scan=SESSION_LABEL,
    log:
        LAYOUT.log_pattern("draw_qc"),
    shell:
        "vhi --no-progress qc --t1w {input.t1w:q} --disease-region {input.disease_region:q}"
        " {params.scans} --scan {params.scan:q} --out {output.image:q}"
        " --slices-out {output.slices:q} > {log:q} 2>&1"

