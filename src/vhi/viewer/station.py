"""Which sessions of a DICOMweb site await cleaning, and the station that opens them.

A session awaits cleaning when its proposal was pushed (``pushed.json`` in its work
folder) and no cleaned segmentation was found on the source. Its viewer route opens its
study in OHIF's segmentation mode, where the proposal SEG is in the study browser.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vhi.cohort.layout import Layout
from vhi.cohort.plan import plan_cohort
from vhi.config.load import Settings
from vhi.errors import ConfigError
from vhi.fileio import read_json
from vhi.sources import make_source, viewer_route
from vhi.sources.dicomweb import DicomwebSource
from vhi.viewer.access import Access, Awaiting
from vhi.viewer.ohif import app_config, fetch_ohif
from vhi.viewer.server import PROXIED, StationServer

log = logging.getLogger(__name__)


def dicomweb_site(settings: Settings, name: str | None) -> Any:
    sites = [s for s in settings.sites if s.source.get("type") == "dicomweb"
             and (name is None or s.name == name)]
    if not sites:
        raise ConfigError("sites", "no DICOMweb site" + (f" named {name}" if name else "")
                                   + ": the viewer serves a DICOMweb source")
    return sites[0]


def awaiting_cleaning(settings: Settings, site_name: str) -> list[Awaiting]:
    """The site's sessions with a pushed proposal and no cleaned segmentation yet."""
    layout = Layout.from_settings(settings)
    out = []
    for planned in plan_cohort(settings):
        s = planned.session
        if s.site != site_name or not s.has_stir or planned.cleaned is not None:
            continue
        receipt = layout.work_file(s, "pushed.json")
        if not Path(receipt).is_file():
            continue
        seg = read_json(receipt).get("seg", {})
        study = str(seg.get("study_uid", ""))
        if study:
            out.append(Awaiting(s.key, s.site, study, viewer_route(study)))
    return out


def station_for(settings: Settings, access: Access, site_name: str | None = None, *,
                dist: Path | None = None, **server: Any) -> tuple[StationServer, Any]:
    """The station server of a DICOMweb site (not started) and the site; ``server``:
    :class:`StationServer`'s options (host, port, tls, public_urls, on_stored)."""
    site = dicomweb_site(settings, site_name)
    source = make_source(site.source, site=site.name)
    if not isinstance(source, DicomwebSource):
        raise ConfigError(f"site {site.name}", "the dicomweb source type is not vhi.sources.dicomweb")
    dist = dist or fetch_ohif()
    shipped = (dist / "app-config.js").read_text()
    station = StationServer(dist, source.url, source.conn.http_session(),
                            app_config(shipped, dicomweb_root=PROXIED), access,
                            timeout_s=source.conn.timeout_s, **server)
    return station, site
