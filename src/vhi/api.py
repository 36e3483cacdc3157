"""The platform's steps on one scan, as functions: what the ``vhi`` command and a notebook call.

Each reads its inputs, checks them (a bad input raises :class:`vhi.errors.InputError`
naming the file and the cause), writes its outputs atomically with a JSON sidecar from
:func:`vhi.provenance.build_provenance`, and returns that sidecar.

    >>> from vhi import api
    >>> ensemble = api.load_ensemble(device="cpu")       # load once ...
    >>> for t1w in t1ws:                                 # ... segment many
    ...     api.segment(t1w, out_for(t1w), ensemble=ensemble)
    >>> api.propose("stir.nii.gz", "disease_region.nii.gz", "auto", "proposal.nii.gz")
    >>> api.measure("cleaned.nii.gz")["vhi_ml"]
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from vhi.errors import InputError
from vhi.fileio import save_json, sidecar_path
from vhi.imaging.nifti import Volume, load_image, load_mask, require_same_grid, save_nifti
from vhi.model.bundles import DEFAULT_BUNDLE
from vhi.provenance import build_provenance

if TYPE_CHECKING:
    from vhi.model.inference import DiseaseRegionEnsemble

PathLike = str | os.PathLike[str]


def load_ensemble(bundle: str = DEFAULT_BUNDLE, device: str = "auto",
                  batch_size: int | None = None, progress: bool = False) -> DiseaseRegionEnsemble:
    """The disease-region U-Net ensemble of ``bundle``, weights checked against their sha256."""
    from vhi.model.inference import DiseaseRegionEnsemble

    return DiseaseRegionEnsemble(bundle, device=device, batch_size=batch_size, progress=progress)


def segment(t1w: PathLike, out: PathLike, *, ensemble: DiseaseRegionEnsemble | None = None,
            started: datetime | None = None) -> dict[str, Any]:
    """Disease region (iliac + sacral bone) of a T1W volume, written to ``out`` (uint8 0/1)."""
    started = started or datetime.now(UTC)
    ensemble = ensemble or load_ensemble()
    image = load_image(t1w)
    try:
        mask = ensemble.segment(image.data)
    except ValueError as exc:  # a volume the model cannot take (too few slices, ...)
        raise InputError(image.path, str(exc)) from None
    voxels = int(mask.sum())
    save_nifti(mask, image.img, out, dtype=np.uint8)
    return _save_sidecar(build_provenance(
        step="segment_disease_region", inputs={"t1w": image.path},
        model=ensemble.bundle.metadata(), device=str(ensemble.device), started=started,
        extra={"output": str(out), "voxels": voxels, "ml": voxels * image.voxel_volume_ml}), out)


def _nonempty_mask(path: PathLike, stir: Volume) -> Volume:
    mask = load_mask(path)
    require_same_grid(stir, mask)
    if not np.any(mask.data == 1):
        raise InputError(mask.path, "mask holds no voxels (no value 1)")
    return mask


def propose(stir: PathLike, disease_region: PathLike, reference: PathLike, out: PathLike, *,
            reference_out: PathLike | None = None, scan: str | None = None) -> dict[str, Any]:
    """Lesion proposal (labels 0/1/2) from the STIR's two thresholds, written to ``out``.

    ``reference`` is a normal-marrow mask, or ``"auto"`` to estimate it from the STIR
    inside the disease region; ``reference_out`` keeps the reference voxels used.
    """
    from vhi.method.lesions import propose as propose_labels

    started = datetime.now(UTC)
    image = load_image(stir)
    scan = scan or image.path.name
    region = _nonempty_mask(disease_region, image).data == 1
    inputs: dict[str, PathLike] = {"stir": image.path, "disease_region": disease_region}
    reference_info: dict[str, object]
    if str(reference) == "auto":
        from vhi.method.reference import auto_reference

        auto = auto_reference(image.data, region, scan)
        reference_mask = auto.mask
        reference_info = {"mode": "auto", "stats": auto.stats}
    else:
        reference_mask = _nonempty_mask(reference, image).data == 1
        inputs["reference"] = reference
        reference_info = {"mode": "manual", "path": str(reference)}
    proposal = propose_labels(image.data, region, reference_mask, scan)
    if reference_out:
        save_nifti(reference_mask, image.img, reference_out, dtype=np.uint8)
    counts = proposal.counts
    t = proposal.thresholds
    save_nifti(proposal.labels, image.img, out, dtype=np.uint8)
    return _save_sidecar({
        "scan": scan,
        "lower": t.lower,
        "upper": t.upper,
        "thresholds": t.as_dict(),
        "reference": reference_info,
        "voxels": counts,
        "voxel_volume_ml": image.voxel_volume_ml,
        "proposal_ml": counts["label_ge1"] * image.voxel_volume_ml,
        "provenance": build_provenance(step="propose_lesions", inputs=inputs, started=started),
    }, out)


def measure(mask: PathLike | Volume, out: PathLike | None = None) -> dict[str, Any]:
    """VHI of a cleaned mask (a path, or the mask already read): voxels with label ≥ 1 ×
    voxel volume, in ml.

    With ``out``, the result is also written there as JSON with its provenance.
    """
    from vhi.method.measure import vhi_ml

    volume = mask if isinstance(mask, Volume) else load_mask(mask)
    voxels = int(np.count_nonzero(volume.data))
    result = {
        "mask": str(volume.path),
        "voxels": voxels,
        "voxel_volume_ml": volume.voxel_volume_ml,
        "vhi_ml": vhi_ml(volume.data, volume.voxel_volume_ml),
    }
    if out:
        save_json({**result, "provenance": build_provenance(step="measure_vhi",
                                                            inputs={"mask": volume.path})}, out)
    return result


def _save_sidecar(sidecar: dict[str, Any], output: PathLike) -> dict[str, Any]:
    """Write ``sidecar`` as the JSON sidecar of ``output`` and return it."""
    save_json(sidecar, sidecar_path(output))
    return sidecar
