# Disease region (iliac + sacral bone) from the T1W by the published U-Net ensemble.
# One job per session (its own outputs, log and failure); --worker loads the ensemble
# once per job or run and serves every session's job from it (vhi.cli.worker). On SLURM
# the profile groups N sessions into one GPU job (groups/group-components: segment).


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
        " --bundle {params.bundle:q} --device {params.device:q} --worker > {log:q} 2>&1"
