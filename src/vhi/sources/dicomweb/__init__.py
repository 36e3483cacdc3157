"""The DICOMweb source: studies from a PACS (e.g. Orthanc), proposals back as DICOM SEG (STOW-RS).

Config (``sites[].source`` with ``type: dicomweb``; every key in
``vhi/config/schemas/config.schema.yaml`` and ``docs/usage.md``)::

    url:           the DICOMweb root, e.g. https://pacs.example.org/dicom-web (no credentials)
    user_env, password_env: environment variables with a user and password (basic auth;
                   default DICOMWEB_USER, DICOMWEB_PASS)
    token_env:     environment variable with a bearer token (default DICOMWEB_TOKEN; wins)
                   none set: ~/.netrc for the host
    verify, ca_bundle: TLS verification (on by default) and a site CA's PEM file
    query:         QIDO-RS study filters (default ModalitiesInStudy: MR)
    subject_label, session_label: templates of study attributes (default {PatientID},
                   {AccessionNumber})
    modalities:    the series modalities that may be scans (default [MR])
    selection:     per-role series rules, as for XNAT (:mod:`vhi.sources.select`;
                   ``most_frames`` = most instances)
    timepoint_pattern: regex on the session id; group 1 is the timepoint (default: the study date)
    retries, backoff_s, timeout_s: transient-error handling (default 3, 1.0 s doubling, 120 s)
    deadline_s:    the most one request may take in all, however slowly the server sends
                   (default 600 s; then the try fails and is retried)
    allow_empty:   the site may list no session (default false: an empty site stops the run)

Everything goes through ``dicomweb-client``. What this source does on the service, and
nothing else: QIDO-RS searches, WADO-RS retrievals of series, SEG instances and their
metadata, and STOW-RS of one BINARY DICOM SEG per proposal into the STIR's study, with
the platform's marks (:mod:`vhi.imaging.seg`). It never deletes or replaces anything:
a proposal already stored with the same mask is not sent again, a changed one is a new
series. The cleaned segmentation is the newest SEG of the study without the platform's
marks that references the STIR series (a viewer saves each edit as a new series,
:mod:`vhi.sources.dicomweb.segs`).

Modules: :mod:`~vhi.sources.dicomweb.client` (session, auth, TLS, retries),
:mod:`~vhi.sources.dicomweb.uris`, :mod:`~vhi.sources.dicomweb.listing` (studies and
series selection), :mod:`~vhi.sources.dicomweb.transfer` (verified series retrieval to
NIfTI), :mod:`~vhi.sources.dicomweb.segs` (SEGs of a study),
:mod:`~vhi.sources.dicomweb.source` (:class:`DicomwebSource`).
"""

from vhi.sources.dicomweb.client import DicomwebError
from vhi.sources.dicomweb.listing import ListedStudy
from vhi.sources.dicomweb.source import DicomwebSource

__all__ = ["DicomwebError", "DicomwebSource", "ListedStudy"]
