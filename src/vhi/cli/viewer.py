"""``vhi viewer``: the cleaning station (OHIF on 127.0.0.1 against a DICOMweb site).

Prints one URL per session awaiting cleaning and serves until interrupted.
``--fetch-only`` fetches the pinned OHIF build (what ``make setup`` runs) and exits.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vhi.config.load import load_config_file
from vhi.errors import ConfigError

log = logging.getLogger("vhi")


def cmd_viewer(args: argparse.Namespace) -> int:
    from vhi.viewer.ohif import OHIF_VERSION, fetch_ohif

    if args.fetch_only:
        dist = fetch_ohif()
        log.info("OHIF %s ready at %s", OHIF_VERSION, dist)
        return 0
    if args.config is None:
        raise ConfigError("vhi viewer", "--config is required (or --fetch-only)")
    from vhi.viewer.station import awaiting_cleaning, station_for

    settings = load_config_file(args.config)
    port = args.port if args.port is not None else (urlsplit(settings.viewer_url).port or 8000)
    server, site = station_for(settings, args.site, port=port)
    sessions = awaiting_cleaning(settings, site.name)
    log.info("VHI cleaning station (OHIF %s) for site %s: %s/ - research use only, not for "
             "clinical decisions; %d sessions await cleaning", OHIF_VERSION, site.name, server.url,
             len(sessions))
    # the command's output: one line per session awaiting cleaning, its key and its URL
    sys.stdout.write("".join(f"{item.key}\t{item.url(server.url)}\n" for item in sessions))
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("viewer", help="serve OHIF against a DICOMweb site for cleaning; print "
                                      "one URL per session awaiting cleaning")
    p.add_argument("--config", type=Path, help="the run's config (its DICOMweb site)")
    p.add_argument("--site", help="the DICOMweb site (default: the first)")
    p.add_argument("--port", type=int, help="port on 127.0.0.1 (0: any free one; default: the "
                                            "port of the config's viewer_url, 8000)")
    p.add_argument("--fetch-only", action="store_true",
                   help="fetch and check the pinned OHIF build, then exit")
    p.set_defaults(func=cmd_viewer)


__all__ = ["register"]

