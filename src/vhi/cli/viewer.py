"""``vhi viewer``: the cleaning station (OHIF on 127.0.0.1 against a DICOMweb site).

Prints one URL per session awaiting cleaning and serves until interrupted.
``--fetch-only`` fetches the pinned OHIF build (what ``make setup`` runs) and exits.
``--local`` (or ``--site`` naming a local site, or a config without DICOMweb sites) is
the station of a folder cohort: it starts its own Orthanc, loads the sessions' STIR and
proposals into it, and writes the SEGs radiologists save to the cleaned paths
(:mod:`vhi.viewer.local`) while it serves and when it stops; ``--no-serve`` loads and
collects once, then exits.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vhi.config.load import load_config_file
from vhi.errors import ConfigError

log = logging.getLogger("vhi")


def station_port(given: int | None, viewer_url: str) -> int:
    """The port the station listens on: ``--port``, else the config's ``viewer_url``'s (the
    address the report links to), else 8000."""
    if given is not None:
        return given
    return urlsplit(viewer_url).port or 8000


def server_options(args: argparse.Namespace, viewer_url: str) -> dict[str, Any]:
    """The station server's options from the command line and the config's ``viewer_url``
    (its host is a name the station answers to, e.g. behind a reverse proxy)."""
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert/--tls-key", "give both the certificate and its key")
    return {"host": args.host, "port": station_port(args.port, viewer_url),
            "tls": (args.tls_cert, args.tls_key) if args.tls_cert else None, "public_urls": (viewer_url,)}


def announce(server: Any, access: Any, items: list[Any]) -> None:
    """The command's output: the worklist's URL, then one line per session awaiting cleaning
    (its key and URL). In single-user mode the URLs carry the run's token, which signs the
    browser in: they are written here only, never to a log."""
    def link(target: str) -> str:
        return access.signin_url(server.url, target) if access.mode == "token" else server.url + target

    lines = [f"worklist\t{link('/')}"]
    if access.mode == "token":  # a reader opens their sessions from their worklist
        lines += [f"{item.key}\t{link(item.viewer_path)}" for item in items]
    sys.stdout.write("".join(line + "\n" for line in lines))
    sys.stdout.flush()


def serve_until_stopped(server: Any, *, halt: Any = None) -> None:
    """Serve until Ctrl-C or SIGTERM; a further signal during shutdown is ignored."""
    import signal
    import time

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    with server:
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            log.info("stopping the station")
        finally:
            if halt is not None:
                halt.set()


def station_access(settings: Any, sites: list[str], items: list[Any]) -> tuple[Any, Any]:
    """The station's access and the recorder of its saves: readers mode when the config has
    readers of the station's sites, else the single-user mode (``items``: the sessions
    awaiting cleaning). Either way every save goes to the run's readers database."""
    from pathlib import Path

    from vhi.fileio import read_json
    from vhi.readers.assign import proposal_id
    from vhi.readers.store import ReadersStore
    from vhi.viewer.access import SingleUser
    from vhi.viewer.readers_access import ReadersAccess, SaveRecorder

    store = ReadersStore.open(settings.work_dir)

    def proposal_of(key: str) -> str:
        receipt = Path(settings.work_dir, key, "pushed.json")
        return proposal_id(read_json(receipt)) if receipt.is_file() else ""

    if any(settings.readers_of(site) for site in sites):
        access = ReadersAccess(settings, sites, store)
        missing = [r for r in access.readers if not store.has_account(r)]
        if missing:
            log.warning("readers without a sign-in (they cannot sign in until `vhi readers add ID "
                        "--config ...`): %s", ", ".join(missing))

        def session_of(user: str, study: str) -> str | None:
            found = [a.session_key for a in store.assignments(reader=user, study_uid=study)]
            return found[0] if found else None
    else:
        access = SingleUser(lambda: items)
        by_study = {item.study_uid: item.key for item in items}

        def session_of(user: str, study: str) -> str | None:
            return by_study.get(study)
    return access, SaveRecorder(store, session_of, proposal_of)


def cmd_viewer(args: argparse.Namespace) -> int:
    from vhi.viewer.ohif import OHIF_VERSION, fetch_ohif

    if args.fetch_only:
        dist = fetch_ohif()
        log.info("OHIF %s ready at %s", OHIF_VERSION, dist)
        return 0
    if args.config is None:
        raise ConfigError("vhi viewer", "--config is required (or --fetch-only)")
    from vhi.viewer.station import awaiting_cleaning, dicomweb_site, station_for

    settings = load_config_file(args.config)
    options = server_options(args, settings.viewer_url)
    kinds = {s.name: s.source.get("type") for s in settings.sites}
    if (args.local or kinds.get(args.site) == "local"
            or (args.site is None and "dicomweb" not in kinds.values() and "local" in kinds.values())):
        return _local_station(settings, args, options)
    if kinds.get(args.site) == "xnat" or (args.site is None and set(kinds.values()) == {"xnat"}):
        return _xnat_station(settings, args, options)
    site = dicomweb_site(settings, args.site)
    sessions = awaiting_cleaning(settings, site.name)
    access, recorder = station_access(settings, [site.name], sessions)
    server, site = station_for(settings, access, site.name, on_stored=recorder, **options)
    log.info("VHI cleaning station (OHIF %s) for site %s: %s/ - research use only, not for "
             "clinical decisions; %s", OHIF_VERSION, site.name, server.url, _what_awaits(access, sessions))
    announce(server, access, sessions)
    serve_until_stopped(server)
    return 0


def _xnat_station(settings: Any, args: argparse.Namespace, options: dict[str, Any]) -> int:
    """The worklists of an XNAT site's readers: they sign in with their XNAT account and open
    each session in XNAT's own OHIF viewer (no viewer or proxy here)."""
    from vhi.readers.store import ReadersStore
    from vhi.viewer.server import StationServer
    from vhi.viewer.xnat_accounts import XnatReadersAccess

    sites = [s for s in settings.sites if s.source.get("type") == "xnat" and args.site in (None, s.name)]
    site = sites[0]
    if not settings.readers_of(site.name):
        raise ConfigError(f"site {site.name}", "an XNAT site's readers clean in XNAT's own viewer; the "
                                               "station serves their worklists: list them under readers:")
    access = XnatReadersAccess(settings, site, ReadersStore.open(settings.work_dir))
    server = StationServer(None, "", None, "", access, **options)
    log.info("VHI cleaning station for XNAT site %s: %s/ - readers sign in with their XNAT account (%s) "
             "and open their sessions in XNAT's OHIF viewer", site.name, server.url, access.server)
    announce(server, access, [])
    serve_until_stopped(server)
    return 0


def _what_awaits(access: Any, sessions: list[Any]) -> str:
    if access.mode == "readers":
        return (f"readers mode: {len(access.readers)} readers sign in at /signin and see their "
                "worklists")
    return f"{len(sessions)} sessions await cleaning"


def _local_station(settings: Any, args: argparse.Namespace, options: dict[str, Any]) -> int:
    """The station of a folder cohort: its own Orthanc, loaded, collected, served."""
    import threading

    from vhi.viewer.local import LocalStation, summary
    from vhi.viewer.ohif import OHIF_VERSION

    with LocalStation(settings, args.site) as station:
        started = time.monotonic()
        loaded = station.load()
        log.info("station for local site %s: %d sessions loaded in %.1f s (%s); %d instances sent; "
                 "Orthanc storage %s", station.site.name, len(loaded), time.monotonic() - started,
                 dict(summary(loaded)), sum(o.sent for o in loaded), station.orthanc.folder)
        collected = station.collect()
        log.info("cleaned SEGs: %s", dict(summary(collected)))
        done = {o.key for o in collected if o.action in ("written", "unchanged", "kept")}
        waiting = [station.sessions[o.key] for o in loaded
                   if o.action != "failed" and o.key not in done]
        if args.no_serve:
            sys.stdout.write("".join(f"{item.key}\t{item.viewer_path}\n" for item in waiting))
            return 1 if any(o.action == "failed" for o in loaded + collected) else 0
        items = [item.awaiting() for item in waiting]
        access, recorder = station_access(settings, [station.site.name], items)
        server = station.server(access, on_stored=recorder, **options)
        log.info("VHI cleaning station (OHIF %s) for local site %s: %s/ - research use only, not for "
                 "clinical decisions; %s; saved SEGs are written to the cleaned paths every %g s and "
                 "when the station stops (Ctrl-C)", OHIF_VERSION, station.site.name, server.url,
                 _what_awaits(access, items), args.collect_every)
        announce(server, access, items)
        halt = threading.Event()

        def collect_loop() -> None:
            while not halt.wait(args.collect_every):
                written = [o for o in station.collect() if o.action == "written"]
                for o in written:
                    log.info("session %s: cleaned %s", o.key, o.detail)

        worker = threading.Thread(target=collect_loop, daemon=True)
        worker.start()
        serve_until_stopped(server, halt=halt)
        worker.join()
        log.info("collecting the last saves")
        final = station.collect()
        log.info("cleaned SEGs: %s", dict(summary(final)))
    return 1 if any(o.action == "failed" for o in final) else 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Store a session's recorded saves again where they are missing from the service."""
    from vhi.readers.restore import restore_saves
    from vhi.readers.store import ReadersStore
    from vhi.sources import make_source

    settings = load_config_file(args.config)
    key = args.session.strip("/")
    site = settings.site(key.split("/", 1)[0])
    store = ReadersStore.open_existing(settings.work_dir)
    saves = [s for s in (store.saves(session_key=key) if store else [])
             if not args.sop or s.sop_uid in args.sop]
    if not saves:
        raise ConfigError(f"session {key}", "no save of it was recorded by the cleaning station "
                                            f"(readers database in {settings.work_dir}/.vhi)")
    kind = site.source.get("type")
    with store:
        if kind == "dicomweb":
            source = make_source(site.source, site=site.name)
            done = restore_saves(store, source.conn, saves)
        elif kind == "local":
            from vhi.viewer.local import LocalStation

            with LocalStation(settings, site.name) as station:
                done = restore_saves(store, station.conn, saves)
        else:
            raise ConfigError(f"site {site.name}", "vhi restore puts back saves made through the cleaning "
                                                   "station (DICOMweb and local sites)")
    sys.stdout.write("".join(f"{r.save.sop_uid}\t{r.save.reader}\t{r.save.saved_at}\t{r.action}\n"
                             for r in done))
    return 1 if any(r.action in ("damaged", "differs") for r in done) else 0


def register(sub: Any) -> None:
    p = sub.add_parser("viewer", help="serve OHIF against a DICOMweb site for cleaning; print "
                                      "one URL per session awaiting cleaning")
    p.add_argument("--config", type=Path, help="the run's config (its DICOMweb site)")
    p.add_argument("--site", help="the site (default: the first DICOMweb site, or with --local "
                                  "the first local one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; another address "
                        "without --tls-cert/--tls-key is warned about: put a TLS reverse proxy in front)")
    p.add_argument("--port", type=int, help="port (0: any free one; default: the port of the "
                                            "config's viewer_url, 8000)")
    p.add_argument("--tls-cert", type=Path, help="PEM certificate: serve HTTPS (with --tls-key)")
    p.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    p.add_argument("--local", action="store_true",
                   help="the station of a local (folder) site: its own Orthanc in the work folder, "
                        "the proposals loaded, saved SEGs written to the cleaned paths")
    p.add_argument("--no-serve", action="store_true",
                   help="with --local: load and collect once, print the sessions awaiting "
                        "cleaning, then exit")
    p.add_argument("--collect-every", type=float, default=30.0, metavar="S",
                   help="with --local: seconds between looks for saved SEGs while serving")
    p.add_argument("--fetch-only", action="store_true",
                   help="fetch and check the pinned OHIF build, then exit")
    p.set_defaults(func=cmd_viewer)
    p = sub.add_parser("restore", help="store a session's saves (recorded by the cleaning station) "
                                       "again where they are missing from the DICOMweb service")
    p.add_argument("session", help="the session key, site/subject/session")
    p.add_argument("--config", type=Path, required=True, help="the run's config")
    p.add_argument("--sop", action="append", help="only this SEG SOP Instance UID (repeatable)")
    p.set_defaults(func=cmd_restore)


__all__ = ["register"]

