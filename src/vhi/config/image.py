"""The container image the workflow's rules run in (the config's ``image``), as Snakemake's
``container:`` directive and Apptainer take it."""

from __future__ import annotations

import os
from pathlib import Path


def container_uri(image: str, project: str | os.PathLike[str]) -> str:
    """``image`` as Snakemake's ``container:`` takes it.

    A URI (``docker://registry/vhi:0.1.0``, ``oras://…``, ``oci-archive:///…``) is kept
    as it is. A path (relative to the ``project`` folder, the Snakefile's) is made
    absolute: an OCI archive (``.tar``, what scripts/build-image.sh writes) becomes
    ``oci-archive://<path>``, which Apptainer converts to a SIF once (Snakemake keeps it
    under ``.snakemake/singularity/``); a SIF file is used where it is.
    """
    if "://" in image:
        return image
    path = Path(image).expanduser()
    if not path.is_absolute():
        path = Path(project) / path
    return f"oci-archive://{path}" if path.name.endswith(".tar") else str(path)
