"""A faithful-enough XNAT for the platform's tests.

Start it with :class:`XnatEmulator` (``with XnatEmulator(tmp_path, users={...}) as emu``);
connect with the unmodified xnatpy client: ``xnat.connect(emu.url, user=..., password=...)``.
See ``/work/shared/XNAT_PROTOCOL.md`` for the behaviour it follows.
"""

from .behaviour import Behaviour
from .faults import FaultRule, FaultSet, LogEntry, RequestLog
from .model import Store
from .seed import add_dicom_scan, ensure_project, ensure_session, ensure_subject, seed_session
from .server import XnatEmulator

__all__ = [
    "Behaviour",
    "FaultRule",
    "FaultSet",
    "LogEntry",
    "RequestLog",
    "Store",
    "XnatEmulator",
    "add_dicom_scan",
    "ensure_project",
    "ensure_session",
    "ensure_subject",
    "seed_session",
]
