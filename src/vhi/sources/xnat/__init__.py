"""The XNAT source: sessions from an XNAT project, proposals back as DICOM SEG ROI collections."""

from vhi.sources.xnat.source import ListedSession, XnatError, XnatSource

__all__ = ["ListedSession", "XnatError", "XnatSource"]
