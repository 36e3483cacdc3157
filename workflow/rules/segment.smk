# Disease region (iliac + sacral bone) from the T1W by the published U-Net ensemble.


rule segment_disease_region:
    input:
        t1w=LAYOUT.work_pattern("t1w.nii.gz"),
    output:
        mask=LAYOUT.work_pattern("disease_region.nii.gz"),
        sidecar=LAYOUT.work_pattern("disease_region.json"),
    params:
        bundle=SETTINGS.bundle,
        device=SETTINGS.device,
    log:
        LAYOUT.log_pattern("segment_disease_region"),
    benchmark:
        LAYOUT.benchmark_pattern("segment_disease_region")
    shell:
        "vhi --no-progress segment --t1w {input.t1w:q} --out {output.mask:q}"
        " --bundle {params.bundle:q} --device {params.device:q} > {log:q} 2>&1"
