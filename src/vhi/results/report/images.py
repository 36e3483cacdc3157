"""The QC images the report links: copied from ``work/`` into ``results/qc/``.

The report links them relatively (``qc/{site}/{subject}/{session}/qc.png``), so the
results folder is whole on its own: it can be copied or served as it is, and the page
loads nothing from outside its folder. A copy is refreshed only when the image in
``work/`` changed (size or modification time), so a rerun copies only what is new.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from vhi.cohort.layout import QC_FILES, QC_RESULTS_DIR, Layout
from vhi.cohort.plan import PlannedSession
from vhi.fileio import atomic_path
from vhi.results.report.text import esc

#: Kinds of QC image, in the order the report prefers them (the newest first).
KINDS = ("cleaned", "image")


def _stale(src: Path, dest: Path) -> bool:
    if not dest.is_file():
        return True
    a, b = src.stat(), dest.stat()
    return (a.st_size, a.st_mtime_ns) != (b.st_size, b.st_mtime_ns)


def publish_qc_images(plan: Sequence[PlannedSession], layout: Layout) -> dict[str, dict[str, str]]:
    """Copy every session's QC images that exist into ``results/qc/``; returns, per session
    key, kind (``image``, ``cleaned``) → the path relative to the results folder."""
    results = Path(layout.results)
    found: dict[str, dict[str, str]] = {}
    for p in plan:
        s = p.session
        for kind in KINDS:
            src = layout.work_file(s, QC_FILES[kind])
            if not src.is_file():
                continue
            rel = Path(QC_RESULTS_DIR, s.site, s.subject, s.session, QC_FILES[kind])
            dest = results / rel
            if _stale(src, dest):
                dest.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(dest) as tmp:
                    shutil.copy2(src, tmp)
            found.setdefault(s.key, {})[kind] = rel.as_posix()
    return found


def thumbnail(images: Mapping[str, str] | None, key: str) -> str:
    """The newest QC image of a session as a lazy thumbnail linking to the full image, and
    the one before cleaning as a link; "no image" when there is none."""
    if not images:
        return '<span class="noimg">no image</span>'
    kind = next(k for k in KINDS if k in images)
    src = esc(images[kind])
    out = (f'<a href="{src}"><img class="qc" src="{src}" loading="lazy" '
           f'alt="QC image of {esc(key)}"></a>')
    if kind == "cleaned" and "image" in images:
        out += f'<a class="before" href="{esc(images["image"])}">before cleaning</a>'
    return out
