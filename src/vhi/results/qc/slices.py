"""Which slices a session's QC image shows, and the few 2-D arrays it is drawn from.

**Slice choice (fixed):** slices are the acquisition slices (array axis 2, the axis the
U-Net segments along; nothing is reoriented). The image shows the :data:`N_SLICES`
slices with the most proposal voxels (label ≥ 1), ties to the lower index, in slice
order; without a proposal (T1W-only session) or with an empty one, the slices with the
most disease-region voxels. The T1W panel is the middle one of those slices.

Each slice is cropped to the disease region's bounding box over the chosen slices (plus
a margin) and turned for display from the affine: superior (else anterior) up, the
patient's right on the left (radiological). Intensities are windowed to 8 bits.

The arrays are saved as ``qc_slices.npz`` beside the image: the scans themselves are
temporary in ``work/``, and the QC image after collection draws the cleaned mask on the
very same slices (:func:`cut_like`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from vhi.errors import InputError
from vhi.fileio import atomic_path

N_SLICES = 3
MARGIN = 0.12  # of the region's box, on each side (at least 6 voxels)
WINDOW_PERCENTILES = (1.0, 99.5)  # of the intensities in the cropped slices
STORE_PX = 240  # the saved grey slices are shrunk to this longest side (the masks are not)


def choose_slices(weights: np.ndarray, n: int = N_SLICES) -> list[int]:
    """The ``n`` slices (axis 2) with the most non-zero voxels, ties to the lower index,
    in slice order (fewer when the volume has fewer slices)."""
    counts = np.count_nonzero(weights.reshape(-1, weights.shape[2]), axis=0)
    best = sorted(range(counts.size), key=lambda k: (-int(counts[k]), k))[:n]
    return sorted(best)


@dataclass(frozen=True)
class Display:
    """How an axis-2 slice is shown: transposed or not, flipped, then cropped."""

    transpose: bool
    flip_rows: bool
    flip_cols: bool
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # rows r0:r1, cols c0:c1 after turning
    edges: tuple[str, str, str, str] = ("", "", "", "")  # top, bottom, left, right
    aspect: float = 1.0  # height of a pixel / its width (mm)

    def turn(self, plane: np.ndarray) -> np.ndarray:
        out = plane.T if self.transpose else plane
        if self.flip_rows:
            out = out[::-1, :]
        if self.flip_cols:
            out = out[:, ::-1]
        return out

    def show(self, plane: np.ndarray) -> np.ndarray:
        r0, r1, c0, c1 = self.box
        return np.ascontiguousarray(self.turn(plane)[r0:r1, c0:c1])


_OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "S": "I", "I": "S"}


def display_for(affine: np.ndarray, zooms: tuple[float, ...]) -> Display:
    """The turn of an axis-2 slice: superior (else anterior) up, patient's right left."""
    codes = nib.aff2axcodes(affine)[:2]  # where axes 0 and 1 point as their index grows
    vertical = next((i for i in (0, 1) if codes[i] in "SI"),
                    next((i for i in (0, 1) if codes[i] in "AP"), 1))
    horizontal = 1 - vertical
    transpose = vertical == 1  # rows must be the vertical axis
    # rows: index grows downwards; the top must be S (or A): flip when the axis grows that way
    flip_rows = codes[vertical] in "SA"
    # columns: the patient's right on the left (radiological); for a sagittal slice, anterior
    flip_cols = codes[horizontal] in "RA"
    top = codes[vertical] if flip_rows else _OPPOSITE[codes[vertical]]
    left = _OPPOSITE[codes[horizontal]] if not flip_cols else codes[horizontal]
    edges = (top, _OPPOSITE[top], left, _OPPOSITE[left])
    aspect = float(zooms[vertical]) / float(zooms[horizontal])
    return Display(transpose, flip_rows, flip_cols, edges=edges, aspect=aspect)


def _box(mask_planes: list[np.ndarray], shape: tuple[int, int]) -> tuple[int, int, int, int]:
    union = np.any(np.stack(mask_planes), axis=0) if mask_planes else np.zeros(shape, bool)
    if not union.any():
        return (0, shape[0], 0, shape[1])
    rows, cols = np.nonzero(union)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    mr, mc = max(6, int(MARGIN * (r1 - r0))), max(6, int(MARGIN * (c1 - c0)))
    return (max(0, r0 - mr), min(shape[0], r1 + mr), max(0, c0 - mc), min(shape[1], c1 + mc))


def _window(planes: np.ndarray) -> np.ndarray:
    """8-bit grey, shrunk to :data:`STORE_PX` at most (the QC panels are no larger)."""
    lo, hi = np.percentile(planes, WINDOW_PERCENTILES) if planes.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    grey = np.clip((planes - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)
    h, w = grey.shape[-2:]
    scale = STORE_PX / max(h, w)
    if scale >= 1:
        return grey
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    shrink = lambda p: np.asarray(Image.fromarray(p).resize(size, Image.Resampling.BILINEAR))  # noqa: E731
    return np.stack([shrink(p) for p in grey]) if grey.ndim == 3 else shrink(grey)


@dataclass(frozen=True)
class QcSlices:
    """The 2-D arrays a QC image is drawn from (all already turned and cropped)."""

    session: str
    modality: str  # of ``base``: "STIR", or "T1W" for a T1W-only session
    slices: np.ndarray  # axis-2 indices shown
    base: np.ndarray  # uint8, n x h x w
    region: np.ndarray  # uint8 0/1, n x h x w
    proposal: np.ndarray | None  # uint8 labels 0/1/2, n x h x w
    t1w: np.ndarray | None  # uint8 h x w: the T1W at the middle slice (STIR sessions)
    t1w_region: np.ndarray | None
    display: Display = field(default_factory=lambda: Display(False, False, False))

    @property
    def t1w_slice(self) -> int:
        return int(self.slices[len(self.slices) // 2])

    def save(self, dest: str | os.PathLike[str]) -> Path:
        arrays = {f.name: getattr(self, f.name) for f in fields(self)
                  if f.name != "display" and getattr(self, f.name) is not None}
        d = self.display
        arrays["display"] = np.array([d.transpose, d.flip_rows, d.flip_cols, *d.box, d.aspect],
                                     dtype=np.float64)
        arrays["edges"] = np.array(d.edges)
        dest = Path(dest)
        with atomic_path(dest) as tmp, tmp.open("wb") as fh:
            np.savez_compressed(fh, **arrays)
        return dest

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> QcSlices:
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise InputError(path, f"cannot read the QC slices ({exc})") from None
        raw = arrays.pop("display")
        display = Display(bool(raw[0]), bool(raw[1]), bool(raw[2]),
                          tuple(int(v) for v in raw[3:7]),  # type: ignore[arg-type]
                          tuple(str(e) for e in arrays.pop("edges")),  # type: ignore[arg-type]
                          float(raw[7]))
        return cls(session=str(arrays.pop("session")), modality=str(arrays.pop("modality")),
                   slices=arrays.pop("slices"), base=arrays.pop("base"),
                   region=arrays.pop("region"), proposal=arrays.get("proposal"),
                   t1w=arrays.get("t1w"), t1w_region=arrays.get("t1w_region"), display=display)


def cut_slices(session: str, *, t1w: np.ndarray, region: np.ndarray, img: nib.Nifti1Image,
               stir: np.ndarray | None = None, proposal: np.ndarray | None = None) -> QcSlices:
    """Choose the slices and cut every array the QC image needs (one grid: ``img``'s)."""
    region = region > 0
    chosen = choose_slices(proposal if proposal is not None and np.any(proposal) else region)
    display = display_for(img.affine, img.header.get_zooms()[:3])
    turned = lambda vol: [display.turn(vol[:, :, k]) for k in chosen]  # noqa: E731
    box = _box(turned(region), display.turn(region[:, :, 0]).shape)
    display = Display(display.transpose, display.flip_rows, display.flip_cols, box,
                      display.edges, display.aspect)
    cut = lambda vol: np.stack([display.show(vol[:, :, k]) for k in chosen])  # noqa: E731
    base_volume = stir if stir is not None else t1w
    middle = chosen[len(chosen) // 2]
    return QcSlices(
        session=session, modality="STIR" if stir is not None else "T1W",
        slices=np.asarray(chosen, dtype=np.int32), base=_window(cut(base_volume)),
        region=cut(region).astype(np.uint8),
        proposal=cut(np.asarray(proposal)).astype(np.uint8) if proposal is not None else None,
        t1w=_window(display.show(t1w[:, :, middle])) if stir is not None else None,
        t1w_region=(display.show(region[:, :, middle]).astype(np.uint8)
                    if stir is not None else None),
        display=display)


def cut_like(qc: QcSlices, volume: np.ndarray) -> np.ndarray:
    """``volume`` (e.g. the cleaned mask) cut to the slices and crop of ``qc``."""
    return np.stack([qc.display.show(volume[:, :, int(k)]) for k in qc.slices])
