"""The cleaning station as an ASGI application (Starlette): sign-in, pages, OHIF, the DICOMweb proxy.

Every request passes three checks before anything else:

* its ``Host`` is one of the station's own names (a page on another site cannot reach
  the station through DNS rebinding);
* a request that changes anything (POST) comes from the station's own origin when the
  browser says where it comes from (``Origin``), so no other site's page can send it;
* it is signed in: a signed, HttpOnly, SameSite=Strict session cookie whose session the
  station issued in this run (signing out or restarting the station ends it). The only
  routes open without it are the sign-in routes.

How one signs in depends on the :class:`~vhi.viewer.access.Access` the station was
started with: a per-run token in the printed URL (single-user mode), or a reader's id
and password (readers mode). The DICOMweb proxy (:mod:`vhi.viewer.dicomweb_routes`)
passes on the DICOMweb routes only, rebuilt from validated parts, and only for the
studies the signed-in user may reach; every STOW-RS is read, checked and recorded
(:mod:`vhi.viewer.stow`) before it is passed on.
"""

from __future__ import annotations

import functools
import json
import logging
import posixpath
import secrets
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route as WebRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from vhi.errors import InputError
from vhi.viewer import pages
from vhi.viewer.access import Access
from vhi.viewer.dicomweb_routes import ROOT, Refused, Route, parse
from vhi.viewer.stow import StowPart, check_storable, read_stow

log = logging.getLogger(__name__)

#: The session cookie's name and lifetime (a reading session, not a week).
COOKIE = "vhi_station"
SESSION_MAX_AGE_S = 12 * 3600
#: The largest STOW-RS body the station reads (a SEG of a whole MR study is a few MB).
MAX_STOW_BYTES = 512 * 1024 * 1024
#: Request headers passed upstream; everything else (cookies, credentials) stays here.
_PASS_UP = ("accept", "content-type")
#: Response headers not passed back (hop-by-hop, framing, the service's cookies).
_DROP_BACK = {"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding",
              "set-cookie", "www-authenticate", "server"}
_SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
                     "X-Frame-Options": "DENY", "Cache-Control": "no-store"}
#: How many proxied requests a station remembers (a reading session sends thousands).
REQUESTS_KEPT = 1000
#: Routes open to a request that is not signed in.
_OPEN = ("/signin", "/auth", "/favicon.ico")


@dataclass
class Station:
    """What one station serves: OHIF's files and config, one DICOMweb service, one access."""

    dist: Path | None  # None: no viewer here (an XNAT site's readers clean in XNAT's own)
    upstream: str  # the DICOMweb root the proxy forwards to ("" : none)
    http: Any  # a requests.Session with the service's credentials and TLS settings
    config_js: str
    access: Access
    hostnames: frozenset[str]  # the names the station answers to (Host), without ports
    origins: frozenset[str]  # the origins its own pages have (scheme://name:port)
    timeout_s: float = 120
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    https: bool = False
    #: called with (user, parts, route) after the service stored a STOW-RS body
    on_stored: Callable[[str, list[StowPart], Route], None] | None = None
    #: (method, path, status) of the last requests proxied (diagnostics, tests)
    requests: deque[tuple[str, str, int]] = field(default_factory=lambda: deque(maxlen=REQUESTS_KEPT))
    _sessions: dict[str, str] = field(default_factory=dict)  # session id -> user

    def sign_in(self, request: Request, user: str) -> None:
        sid = secrets.token_urlsafe(24)
        self._sessions[sid] = user
        request.session.clear()
        request.session["sid"] = sid

    def user(self, request: Request) -> str | None:
        return self._sessions.get(str(request.session.get("sid", "")))

    def sign_out(self, request: Request) -> None:
        self._sessions.pop(str(request.session.get("sid", "")), None)
        request.session.clear()


class _Guard:
    """Host, origin and sign-in checks in front of every route (pure ASGI)."""

    def __init__(self, app: ASGIApp, station: Station) -> None:
        self.app = app
        self.station = station

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal = self._refusal(request)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refusal(self, request: Request) -> Response | None:
        station = self.station
        host = request.headers.get("host", "")
        if hostname_of(host) not in station.hostnames:
            return PlainTextResponse("unknown host", status_code=421)
        origin = request.headers.get("origin")
        if request.method not in ("GET", "HEAD") and origin is not None and origin not in station.origins:
            return PlainTextResponse(f"cross-origin request refused (from {origin[:80]})", status_code=403)
        path = request.url.path
        if path in _OPEN or station.user(request) is not None:
            return None
        if path.startswith(ROOT) or request.method not in ("GET", "HEAD"):
            return PlainTextResponse("sign in first", status_code=401)
        return RedirectResponse(f"/signin?next={quote(_local_target(request), safe='')}", status_code=303)


def hostname_of(host: str) -> str:
    """The name in a ``Host`` header (``name``, ``name:port``, ``[v6]:port``), lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _local_target(request: Request) -> str:
    """Where to go after signing in: this path and query, on this station only."""
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def _safe_next(target: str | None) -> str:
    """A redirect target on this station (a path), else ``/``: never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/"


def _with_headers(response: Response) -> Response:
    for key, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)
    return response


def create_app(station: Station) -> Starlette:
    """The station's ASGI application."""
    access = station.access

    async def signin(request: Request) -> Response:
        target = _safe_next(request.query_params.get("next"))
        if request.method == "GET":
            if access.mode == "token":
                return _with_headers(HTMLResponse(pages.token_needed(), status_code=401))
            return _with_headers(HTMLResponse(pages.signin(target)))
        form = await request.form()
        user, password = str(form.get("reader", "")), str(form.get("password", ""))
        ok = await run_in_threadpool(access.check_password, user, password)
        if not ok:
            log.warning("station: failed sign-in for %r", user[:64])
            return _with_headers(HTMLResponse(pages.signin(_safe_next(str(form.get("next", ""))),
                                                           failed=True), status_code=401))
        station.sign_in(request, user)
        log.info("station: %s signed in", user)
        return RedirectResponse(_safe_next(str(form.get("next", ""))), status_code=303)

    async def token_signin(request: Request) -> Response:
        """Single-user mode: the printed URL's token, once, becomes a session cookie."""
        token = request.query_params.get("token", "")
        user = access.user_for_token(token)
        if user is None:
            return _with_headers(HTMLResponse(pages.token_needed(), status_code=401))
        station.sign_in(request, user)
        return RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303)

    async def signout(request: Request) -> Response:
        station.sign_out(request)
        return RedirectResponse("/signin", status_code=303)

    async def home(request: Request) -> Response:
        user = station.user(request) or ""
        rows = await run_in_threadpool(access.worklist, user)
        return _with_headers(HTMLResponse(pages.worklist(access.display_name(user), rows,
                                                         readers_mode=access.mode == "readers")))

    async def open_session(request: Request) -> Response:
        user = station.user(request) or ""
        key = request.path_params["key"]
        try:
            target = await run_in_threadpool(access.open_session, user, key)
        except Refused as exc:
            return _with_headers(HTMLResponse(pages.refused(exc.reason), status_code=exc.status))
        return RedirectResponse(target, status_code=303)

    async def app_config(request: Request) -> Response:
        return _with_headers(Response(station.config_js, media_type="application/javascript"))

    async def dicomweb(request: Request) -> Response:
        user = station.user(request) or ""
        if not station.upstream:
            return _with_headers(PlainTextResponse("this station serves no DICOMweb", status_code=404))
        try:
            return _with_headers(await _proxy(station, request, user))
        except Refused as exc:
            log.warning("station: refused %s %s for %s: %s", request.method,
                        request.url.path[:160], user, exc.reason)
            return _with_headers(PlainTextResponse(exc.reason, status_code=exc.status))

    async def ohif_file(request: Request) -> Response:
        if station.dist is None:
            return _with_headers(PlainTextResponse("not found", status_code=404))
        return _with_headers(_static(station.dist, request.url.path))

    routes = [
        WebRoute("/signin", signin, methods=["GET", "POST"]),
        WebRoute("/auth", token_signin, methods=["GET"]),
        WebRoute("/signout", signout, methods=["POST"]),
        WebRoute("/", home, methods=["GET", "HEAD"]),
        WebRoute("/open/{key:path}", open_session, methods=["GET"]),
        WebRoute("/app-config.js", app_config, methods=["GET", "HEAD"]),
        WebRoute(ROOT, dicomweb, methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]),
        WebRoute(ROOT + "/{rest:path}", dicomweb, methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]),
        WebRoute("/{rest:path}", ohif_file, methods=["GET", "HEAD"]),
    ]
    middleware = [
        Middleware(SessionMiddleware, secret_key=station.secret, session_cookie=COOKIE,
                   max_age=SESSION_MAX_AGE_S, same_site="strict", https_only=station.https),
        Middleware(_Guard, station=station),
    ]
    return Starlette(routes=routes, middleware=middleware)


def _static(dist: Path, path: str) -> Response:
    """A file of the OHIF build; a path with no extension is the app's ``index.html``."""
    root = dist.resolve()
    rel = posixpath.normpath(path.lstrip("/")) if path.strip("/") else ""
    candidate = (root / rel).resolve() if rel and not rel.startswith("..") else root
    if candidate != root and root in candidate.parents and candidate.is_file():
        return FileResponse(candidate)
    last = posixpath.basename(path)
    if "." not in last or last.endswith(".html"):
        return FileResponse(root / "index.html", media_type="text/html")
    return PlainTextResponse("not found", status_code=404)


async def _read_body(request: Request) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_STOW_BYTES:
            raise Refused(413, f"body over {MAX_STOW_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _proxy(station: Station, request: Request, user: str) -> Response:
    """One DICOMweb request, checked, passed on, its answer filtered to the user's studies."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    route = parse(request.method, raw.decode("latin-1").split("?", 1)[0])
    allowed = await run_in_threadpool(station.access.studies, user)
    if route.study_uid and allowed is not None and route.study_uid not in allowed:
        raise Refused(403, f"study {route.study_uid} is not assigned to you")
    hidden = await run_in_threadpool(station.access.hidden_series, user, route.study_uid) \
        if route.study_uid else frozenset()
    if route.series_uid in hidden:
        raise Refused(403, f"series {route.series_uid} is another reader's read of this double read")
    body, parts = None, []
    if route.kind == "stow":
        body = await _read_body(request)
        parts = read_stow(request.headers.get("content-type", ""), body)
        check_storable(parts, route.study_uid, allowed)
    headers = {k: v for k, v in request.headers.items() if k.lower() in _PASS_UP}
    # the browser's Host (checked above): a service that writes bulk-data URLs from it
    # (Orthanc) points them back at the station
    headers["Host"] = request.headers.get("host", "")
    query = request.url.query
    url = f"{station.upstream}/{route.path}" + (f"?{query}" if query else "")
    answer = await run_in_threadpool(functools.partial(_forward, station, request.method, url,
                                                       headers=headers, body=body, route=route))
    if isinstance(answer, Response):
        return answer
    content = answer.content
    if route.kind == "qido" and answer.status_code == 200:
        # a search inside a study (checked above) keeps its rows; one across studies only
        # the user's studies' rows
        studies = None if route.study_uid else allowed
        if studies is not None or hidden:
            content = _only_allowed(content, studies, hidden)
    station.requests.append((request.method, "/" + route.path, answer.status_code))
    if route.kind == "stow" and answer.status_code in (200, 202) and station.on_stored is not None:
        stored = _stored_parts(parts, answer.content)
        try:
            if stored:
                await run_in_threadpool(station.on_stored, user, stored, route)
        except (InputError, OSError, sqlite3.Error) as exc:
            log.error("station: %s's save (%s) is on the DICOMweb service but was NOT recorded: %s",
                      user, ", ".join(p.sop_uid for p in stored), exc)
            return PlainTextResponse("saved on the DICOMweb service, but the station could not record "
                                     "it: save again, or tell the data manager", status_code=500)
    back = {k: v for k, v in answer.headers.items() if k.lower() not in _DROP_BACK}
    return Response(content, status_code=answer.status_code, headers=back)


def _forward(station: Station, method: str, url: str, *, headers: dict[str, str], body: bytes | None,
             route: Route) -> Any:
    """The service's answer; a 502 response when it cannot be reached (GETs tried 3 times:
    a kept-alive connection the service closed, or a moment of overload under the
    viewer's many parallel frame requests)."""
    import requests

    attempts = 3 if method in ("GET", "HEAD") else 1
    error: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            answer = station.http.request(method, url, data=body, headers=headers,
                                          timeout=station.timeout_s, allow_redirects=False)
        except requests.ConnectionError as exc:
            error = exc
            if attempt < attempts:
                time.sleep(0.2 * attempt)
            continue
        except requests.RequestException as exc:
            error = exc
            break
        if answer.status_code >= 400:
            log.warning("station proxy: %s %s: HTTP %d", method, route.path[:160], answer.status_code)
        return answer
    log.warning("station proxy: %s %s: %s", method, route.path[:160], type(error).__name__)
    return PlainTextResponse(f"DICOMweb service unreachable ({type(error).__name__})", status_code=502)


def _only_allowed(content: bytes, allowed: frozenset[str] | None, hidden: frozenset[str]) -> bytes:
    """A QIDO-RS answer with only the results of allowed studies (0020000D; None: any) and
    none of the hidden series (0020000E)."""
    try:
        rows = json.loads(content)
    except ValueError:
        raise Refused(502, "the DICOMweb service's search answer is not JSON") from None
    if not isinstance(rows, list):
        raise Refused(502, "the DICOMweb service's search answer is not a list")
    kept = [row for row in rows if isinstance(row, dict)
            and (allowed is None or set(row.get("0020000D", {}).get("Value", [])) & allowed)
            and not set(row.get("0020000E", {}).get("Value", [])) & hidden]
    return json.dumps(kept).encode()


def _stored_parts(parts: list[StowPart], answer: bytes) -> list[StowPart]:
    """The parts the service did not list as failed (FailedSOPSequence, 00081198)."""
    try:
        doc = json.loads(answer) if answer else {}
    except ValueError:
        return parts
    failed = set()
    for item in (doc.get("00081198", {}) or {}).get("Value", []) if isinstance(doc, dict) else []:
        failed.update(item.get("00081155", {}).get("Value", []))
    return [p for p in parts if p.sop_uid not in failed]

