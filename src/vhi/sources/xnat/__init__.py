"""The XNAT source: sessions from an XNAT project, proposals back as DICOM SEG ROI collections for OHIF.

Config (``sites[].source`` with ``type: xnat``; every key in
``vhi/config/schemas/config.schema.yaml`` and ``docs/usage.md``)::

    server:       https://xnat.example.org  (no credentials in the URL)
    project:      the XNAT project ID
    user_env:     environment variable with the user name  (default XNAT_USER)
    password_env: environment variable with the password   (default XNAT_PASS)
                  neither set: xnatpy's own variables, then ~/.netrc
    verify:       verify the server's TLS certificate (default true)
    ca_bundle:    PEM file of the site's CA (for a server with a site-internal CA)
    selection:    per-role scan rules, see :mod:`vhi.sources.select`
    timepoint_pattern: regex on the session label; group 1 is the timepoint
                  (default: the session date)
    proposal_label: label of the proposal collection, default ``VHI_PROPOSAL_{session}``
    resource:     the scan resource holding the DICOM files (default DICOM)
    retries, backoff_s, timeout_s: transient-error handling (default 3, 1.0 s doubling, 120 s)
    deadline_s:    the most one request may take in all, however slowly the server sends
                   (default 600 s; then the try fails and is retried)
    allow_empty:   the site may list no session (default false: an empty site stops the run)

Everything goes through the ``xnat`` client (xnatpy). What this source does on the
server, and nothing else:

* reads: the project's MR sessions, their scans, a scan's file listing and its zip
  (checked: zip CRCs, every listed file present with the listed size and MD5);
* writes: one ROI collection per session, labelled :meth:`XnatSource.proposal_label`,
  with ``overwrite=false``; only a collection under that label whose SEG carries the
  platform's marks and differs from the new proposal is replaced (``overwrite=true``).
  A collection saved by anyone else is never written or deleted. A push is done only
  when the collection read back from the server is byte-identical to what was sent.

Cleaned segmentations (the OHIF viewer saves a *new* collection on every save,
``SEG_<date>_<time>_<ms>_S<n>``, ``overwrite=false``): the chosen one is the newest
(by the server's ``insert_date``) SEG collection of the session that (a) is not the
proposal, (b) was stored after the proposal and (c) references the session's STIR
series. It is decoded onto the STIR grid with highdicom; its collection ID, label and
SEG SOP Instance UID go into ``cleaned.json``.

Modules: :mod:`~vhi.sources.xnat.client` (connection, TLS, login, retries),
:mod:`~vhi.sources.xnat.uris` (scan and collection URIs), :mod:`~vhi.sources.select`
(which scan is the STIR, the T1W), :mod:`~vhi.sources.xnat.listing` (sessions and their
scans), :mod:`~vhi.sources.xnat.transfer` (scan download, verified, to NIfTI),
:mod:`~vhi.sources.xnat.roi` (ROI collections), :mod:`~vhi.sources.xnat.source`
(:class:`XnatSource`: push and collect on top of them).
"""

from vhi.sources.xnat.client import XnatError
from vhi.sources.xnat.listing import ListedSession
from vhi.sources.xnat.source import XnatSource

__all__ = ["ListedSession", "XnatError", "XnatSource"]
