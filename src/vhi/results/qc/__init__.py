"""QC images per session: what a data manager and a reader look at before opening a viewer.

* :mod:`.slices` – the fixed slice choice (the slices with the most proposal voxels), the
  crop and turn for display, ``qc_slices.npz``;
* :mod:`.draw` – the PNG (Pillow): STIR slices with the disease region, the proposal and
  the cleaned mask, the T1W with the U-Net's region.

:func:`draw_session_qc` runs after the proposal (or the disease region of a T1W-only
session) and writes ``qc.png`` + ``qc_slices.npz``; :func:`draw_cleaned_qc` runs after
collection and writes ``qc_cleaned.png`` from the saved slices and the cleaned mask.
"""

from __future__ import annotations

import os
from pathlib import Path

from vhi.errors import InputError
from vhi.imaging.nifti import Volume, grid_mismatch, load_image, load_mask
from vhi.results.qc.draw import render_qc, write_png
from vhi.results.qc.slices import N_SLICES, QcSlices, choose_slices, cut_like, cut_slices

PathLike = str | os.PathLike[str]

__all__ = ["N_SLICES", "QcSlices", "choose_slices", "cut_like", "cut_slices", "draw_cleaned_qc",
           "draw_session_qc", "render_qc", "write_png"]


def draw_session_qc(session: str, *, t1w: PathLike, region: PathLike, out: PathLike,
                    slices_out: PathLike, stir: PathLike | None = None,
                    proposal: PathLike | None = None) -> QcSlices:
    """``qc.png`` and ``qc_slices.npz`` of one session from its scans and masks."""
    t1w_v, region_v = load_image(t1w), load_mask(region)
    stir_v = load_image(stir) if stir else None
    proposal_v = load_mask(proposal) if proposal else None
    for other in (region_v, stir_v, proposal_v):
        why = other is not None and grid_mismatch(t1w_v.img, other.img)
        if why:
            raise InputError(f"session {session}", f"{other.path} is not on the T1W's grid: {why}")
    qc = cut_slices(session, t1w=t1w_v.data, region=region_v.data, img=t1w_v.img,
                    stir=None if stir_v is None else stir_v.data,
                    proposal=None if proposal_v is None else proposal_v.data)
    qc.save(slices_out)
    write_png(render_qc(qc), out)
    return qc


def draw_cleaned_qc(slices: PathLike, cleaned: PathLike | Volume, out: PathLike) -> Path:
    """``qc_cleaned.png``: the saved slices with the cleaned mask's outline added (the mask
    as a path, or already read)."""
    qc = QcSlices.load(slices)
    mask = cleaned if isinstance(cleaned, Volume) else load_mask(cleaned)
    if mask.data.ndim != 3 or max(int(k) for k in qc.slices) >= mask.data.shape[2]:
        raise InputError(mask.path, f"session {qc.session}: not on the grid of the QC slices")
    return write_png(render_qc(qc, cut_like(qc, mask.data)), out)
