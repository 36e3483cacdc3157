"""The published disease-region U-Net: architecture (``unet``), model bundles (``bundles``) and
ensemble inference (``inference``, which imports torch: import it only where it is needed)."""
