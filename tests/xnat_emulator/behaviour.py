"""Switches for the places where a real XNAT's behaviour is not pinned down (protocol note §6).

The defaults are the strict reading of ``/work/shared/XNAT_PROTOCOL.md``: listings carry only
the documented default columns (more only through ``columns=``), so a client cannot come to
depend on fields that only the emulator volunteers. The other switches choose between two
plausible servers; a client must work against both, so the tests run it against both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

#: ``overwrite_dates``: what an ``overwrite=true`` PUT of an ROI collection does to its
#: ``insert_date``: ``reset`` (the date of the overwrite) or ``keep`` (the first store's).
DATE_MODES = ("reset", "keep")
#: ``zip_layout``: the folders of ``…/files?format=zip``: ``default``
#: (``<session>/scans/<id>-<type>/resources/<label>/files/<path>``) or ``flat`` (``<path>``).
ZIP_LAYOUTS = ("default", "flat")


@dataclass(frozen=True)
class Behaviour:
    """How the emulator answers where the protocol leaves a choice.

    ``strict``: listings carry only the documented default columns (§1.3);
    ``overwrite_dates``: see :data:`DATE_MODES`; ``zip_layout``: see :data:`ZIP_LAYOUTS`;
    ``csrf``: PUT/POST/DELETE need ``XNAT_CSRF=<token>`` (from ``GET /data/auth?CSRF=true``).
    """

    strict: bool = True
    overwrite_dates: str = "reset"
    zip_layout: str = "default"
    csrf: bool = False

    def __post_init__(self) -> None:
        if self.overwrite_dates not in DATE_MODES:
            raise ValueError(f"overwrite_dates must be one of {DATE_MODES}")
        if self.zip_layout not in ZIP_LAYOUTS:
            raise ValueError(f"zip_layout must be one of {ZIP_LAYOUTS}")

    @classmethod
    def from_env(cls, **overrides: object) -> Behaviour:
        """Defaults, then ``VHI_EMULATOR_DATES`` / ``VHI_EMULATOR_ZIP`` / ``VHI_EMULATOR_CSRF``
        (so a whole test run can be repeated against the other server), then ``overrides``."""
        values: dict[str, object] = {
            "overwrite_dates": os.environ.get("VHI_EMULATOR_DATES", "reset"),
            "zip_layout": os.environ.get("VHI_EMULATOR_ZIP", "default"),
            "csrf": os.environ.get("VHI_EMULATOR_CSRF", "") in ("1", "true", "yes"),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
