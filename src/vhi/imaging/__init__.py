"""Images in and out: NIfTI I/O and grid checks, DICOM → NIfTI (dcm2niix), masks ↔ DICOM SEG."""
