"""The QC image of a session (Pillow): a few slices with the masks drawn on them.

One row of panels, each the cropped slice scaled to about :data:`PANEL_PX` pixels:

* the STIR slices (:mod:`.slices` says which) with the disease region's outline
  (yellow), the proposal filled (label 1 orange, label 2 red) and, once collected, the
  cleaned mask's outline (cyan);
* beside them the T1W at the middle slice with the U-Net's disease region (green).

A T1W-only session shows its T1W slices with the region. A line above names the session,
the slices and the colours. The PNG is palette-coded (well under 150 KB).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from vhi.fileio import atomic_path
from vhi.results.qc.slices import QcSlices

PANEL_PX = 240
GAP, HEADER, CAPTION = 6, 40, 16
COLOURS = {
    "region": (255, 215, 0),
    "label1": (255, 140, 0),
    "label2": (230, 20, 60),
    "cleaned": (0, 229, 255),
    "t1w_region": (60, 200, 90),
}
ALPHA = {"label1": 0.45, "label2": 0.6, "t1w_region": 0.35}
PALETTE_COLOURS = 256  # fast octree: keeps the few overlay colours exact


def _font(size: int = 12) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _panel_size(shape: tuple[int, int], aspect: float) -> tuple[int, int]:
    """(width, height) in pixels of a ``rows x cols`` crop whose pixels are ``aspect`` tall."""
    h_mm, w_mm = shape[0] * aspect, float(shape[1])
    scale = PANEL_PX / max(h_mm, w_mm)
    return max(1, round(w_mm * scale)), max(1, round(h_mm * scale))


def _scaled(plane: np.ndarray, size: tuple[int, int], *, mask: bool) -> np.ndarray:
    resample = Image.Resampling.NEAREST if mask else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(plane.astype(np.uint8)).resize(size, resample))


def _outline(mask: np.ndarray, width: int = 1) -> np.ndarray:
    inner = ndimage.binary_erosion(mask, iterations=width, border_value=0)
    return mask & ~inner


def _paint(rgb: np.ndarray, where: np.ndarray, colour: tuple[int, int, int], alpha: float = 1.0) -> None:
    rgb[where] = rgb[where] * (1.0 - alpha) + np.asarray(colour, dtype=np.float64) * alpha


def _panel(base: np.ndarray, aspect: float, layers: list[tuple[str, np.ndarray, str]]) -> np.ndarray:
    """One slice as RGB: ``layers`` of (colour name, mask, "fill" | "outline" | "thick")."""
    size = _panel_size(base.shape, aspect)
    grey = _scaled(base, size, mask=False).astype(np.float64)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    for colour, mask, how in layers:
        scaled = _scaled(mask, size, mask=True) > 0
        if how == "fill":
            _paint(rgb, scaled, COLOURS[colour], ALPHA[colour])
        else:
            _paint(rgb, _outline(scaled, 2 if how == "thick" else 1), COLOURS[colour])
    return np.clip(rgb, 0, 255).astype(np.uint8)


def render_qc(qc: QcSlices, cleaned: np.ndarray | None = None) -> Image.Image:
    """The QC image of ``qc`` (and the cleaned mask cut like it, :func:`.slices.cut_like`)."""
    d = qc.display
    panels, captions = [], []
    for i, k in enumerate(qc.slices):
        layers = [("region", qc.region[i], "outline")]
        if qc.proposal is not None:
            layers += [("label1", qc.proposal[i] == 1, "fill"), ("label2", qc.proposal[i] >= 2, "fill")]
        if cleaned is not None:
            layers.append(("cleaned", cleaned[i] > 0, "thick"))
        panels.append(_panel(qc.base[i], d.aspect, layers))
        captions.append(f"{qc.modality} slice {int(k)}")
    if qc.t1w is not None and qc.t1w_region is not None:
        panels.append(_panel(qc.t1w, d.aspect, [("t1w_region", qc.t1w_region, "fill"),
                                                ("t1w_region", qc.t1w_region, "outline")]))
        captions.append(f"T1W slice {qc.t1w_slice}: disease region")
    width = sum(p.shape[1] for p in panels) + GAP * (len(panels) + 1)
    height = HEADER + max(p.shape[0] for p in panels) + CAPTION + GAP
    canvas = Image.new("RGB", (max(width, 420), height), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    font, small = _font(12), _font(11)
    chosen = "most proposal voxels" if qc.proposal is not None and qc.proposal.any() else (
        "most disease-region voxels")
    draw.text((GAP, 4), f"{qc.session}   {qc.modality} slices with the {chosen}", font=font,
              fill=(240, 240, 240))
    legend = [("region", "disease region")]
    if qc.proposal is not None:
        legend += [("label1", "proposal 1"), ("label2", "proposal 2")]
    if cleaned is not None:
        legend.append(("cleaned", "cleaned"))
    x = GAP
    for colour, label in legend:
        draw.rectangle((x, 24, x + 10, 34), fill=COLOURS[colour])
        draw.text((x + 14, 22), label, font=small, fill=(220, 220, 220))
        x += 24 + int(draw.textlength(label, font=small))
    x = GAP
    top, bottom, left, right = d.edges
    for panel, caption in zip(panels, captions, strict=True):
        h, w = panel.shape[:2]
        canvas.paste(Image.fromarray(panel), (x, HEADER))
        for text, (tx, ty) in ((top, (x + w / 2 - 3, HEADER + 1)), (left, (x + 2, HEADER + h / 2 - 6)),
                               (right, (x + w - 9, HEADER + h / 2 - 6)),
                               (bottom, (x + w / 2 - 3, HEADER + h - 14))):
            if text:
                draw.text((tx, ty), text, font=small, fill=(255, 255, 255))
        draw.text((x, HEADER + h + 2), caption, font=small, fill=(200, 200, 200))
        x += w + GAP
    return canvas


def write_png(image: Image.Image, dest: str | os.PathLike[str]) -> Path:
    """Save palette-coded (a few tens of KB) and atomically."""
    dest = Path(dest)
    quantized = image.quantize(colors=PALETTE_COLOURS, method=Image.Quantize.FASTOCTREE)
    with atomic_path(dest) as tmp, tmp.open("wb") as fh:
        quantized.save(fh, format="PNG", optimize=True)
    return dest
