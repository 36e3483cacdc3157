"""Top-level routing: public routes, authentication, site routes, ``/data`` and ``/xapi/roi``."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from urllib.parse import parse_qsl

from .auth import AuthManager, AuthResult
from .behaviour import Behaviour
from .model import ROI_XSI, SCAN_XSI, SESSION_XSI, Store
from .responses import HttpError, Response, as_json, result_set, text
from .rest import Request, RestApi
from .roi import RoiApi

LOG = logging.getLogger(__name__)

SCHEMA_DIR = Path(__file__).with_name("schemas")
SCHEMAS = ("xnat", "xdat", "icr")
SEARCH_ELEMENTS = {
    "xnat:projectData": ("ID", "NAME", "DESCRIPTION"),
    "xnat:subjectData": ("SUBJECT_LABEL", "INSERT_DATE"),
    SESSION_XSI: ("SESSION_ID", "LABEL", "DATE", "INSERT_DATE"),
    SCAN_XSI: ("SCAN_TYPE", "SERIES_DESCRIPTION"),
    ROI_XSI: ("COLLECTION_TYPE", "ROI_NAME"),
}
FAILED = "Authentication failed."


class App:
    def __init__(self, store: Store, auth: AuthManager, version: str = "1.8.10",
                 behaviour: Behaviour | None = None) -> None:
        self.store = store
        self.auth = auth
        self.version = version
        self.behaviour = behaviour or Behaviour()
        self.rest = RestApi(store, self.behaviour)
        self.roi = RoiApi(store, self.behaviour)
        self.started = time.time()

    # ------------------------------------------------------------------ entry
    def __call__(self, request: Request, authorization: str | None,
                 cookie: str | None) -> tuple[Response, str | None]:
        auth = self.auth.authenticate(authorization, cookie)
        try:
            response = self._route(request, auth)
        except HttpError as exc:
            response = exc.to_response()
            if exc.status == 401:
                response.headers["WWW-Authenticate"] = 'Basic realm="XNAT"'
        if auth.new_token and auth.token:
            response.cookies.append(self._cookie(auth.token))
        return response, auth.user

    def _cookie(self, token: str) -> str:
        return f"JSESSIONID={token}; Path=/; HttpOnly"

    def _expiry_cookie(self) -> str:
        now_ms = int(time.time() * 1000)
        timeout_ms = int(self.auth.session_timeout * 1000)
        return f'SESSION_EXPIRATION_TIME="{now_ms},{timeout_ms}"; Path=/'

    # ------------------------------------------------------------------ routing
    def _route(self, request: Request, auth: AuthResult) -> Response:
        path = request.path.rstrip("/") or "/"
        method = request.method
        if auth.failed:
            raise HttpError(401, FAILED)
        if path in ("/", "/app/template/Index.vm"):
            return text("XNAT emulator (VHI tests)")
        if path == "/data/services/auth":
            return self._login(request)
        if path == "/data/JSESSION" and method == "DELETE":
            self.auth.close_session(auth.token)
            return text("", 200)
        if auth.user is None:
            raise HttpError(401, "Authentication required.")
        request.user = auth.user
        return self._authenticated(request, auth, path)

    def _authenticated(self, request: Request, auth: AuthResult, path: str) -> Response:
        method = request.method
        exact = {
            ("GET", "/data/JSESSION"): lambda: text(auth.token or ""),
            ("POST", "/data/JSESSION"): lambda: text(auth.token or ""),
            ("GET", "/data/auth"): lambda: self._who_am_i(request, auth),
            ("GET", "/xapi/siteConfig/buildInfo"): self._build_info,
            ("GET", "/xapi/siteConfig/uptime"): lambda: as_json(
                {"seconds": int(time.time() - self.started)}
            ),
            ("GET", "/xapi/schemas"): lambda: as_json(list(SCHEMAS)),
        }
        handler = exact.get((method, path))
        if handler is not None:
            return handler()
        if method in ("PUT", "POST", "DELETE") and self.behaviour.csrf:
            self._check_csrf(request, auth)
        segments = [s for s in path.split("/") if s]
        if path == "/data/version":
            raise HttpError(404, "Not found.")  # no such route on XNAT 1.7+
        if segments[:2] == ["xapi", "schemas"] and method == "GET":
            return self._schema("/".join(segments[2:]))
        if segments[:3] == ["data", "search", "elements"] and method == "GET":
            return self._search_elements(segments[3:])
        if segments[:2] == ["xapi", "roi"]:
            return self.roi.handle(request, segments[2:])
        if segments[:2] == ["data", "archive"]:
            return self.rest.handle(request, segments[2:])
        if segments[:1] in (["data"], ["REST"]):
            return self.rest.handle(request, segments[1:])
        raise HttpError(404, f"No route for {path}")

    @staticmethod
    def csrf_token(auth: AuthResult) -> str:
        """The session's CSRF token (derived from its JSESSION, as stable as the session)."""
        return hashlib.sha256(f"csrf:{auth.token}".encode()).hexdigest()[:32]

    def _who_am_i(self, request: Request, auth: AuthResult) -> Response:
        body = f"User '{auth.user}' is logged in"
        if request.query.get("CSRF", "").lower() == "true":
            body += f"; XNAT_CSRF={self.csrf_token(auth)}"
        return text(body)

    def _check_csrf(self, request: Request, auth: AuthResult) -> None:
        """A write without the session's token is refused (when the switch is on)."""
        if request.query.get("XNAT_CSRF") != self.csrf_token(auth):
            raise HttpError(403, "Invalid or missing CSRF token (XNAT_CSRF).")

    def _build_info(self) -> Response:
        return as_json(
            {"version": self.version, "buildNumber": "emulator", "commit": "emulator",
             "isDirty": "false"}
        )

    def _login(self, request: Request) -> Response:
        if request.method not in ("PUT", "POST"):
            raise HttpError(405, "Method not allowed.")
        form = dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
        user = form.get("username") or form.get("j_username") or ""
        password = form.get("password") or form.get("j_password") or ""
        if not self.auth.check_password(user, password):
            LOG.info("failed login for %r", user)
            raise HttpError(401, FAILED)
        token = self.auth.open_session(user)
        response = text(token)
        response.cookies.extend([self._cookie(token), self._expiry_cookie()])
        return response

    @staticmethod
    def _schema(name: str) -> Response:
        if name not in SCHEMAS:
            raise HttpError(404, f"Schema {name} not found")
        body = (SCHEMA_DIR / f"{name}.xsd").read_bytes()
        return Response(body=body, content_type="text/xml;charset=UTF-8")

    @staticmethod
    def _search_elements(rest: list[str]) -> Response:
        if not rest:
            rows = [{"ELEMENT_NAME": name, "COUNT": "0"} for name in SEARCH_ELEMENTS]
            return result_set(rows, "Elements")
        fields = SEARCH_ELEMENTS.get("/".join(rest))
        if fields is None:
            raise HttpError(404, "Unknown element")
        return result_set([{"FIELD_ID": f, "HEADER": f.title()} for f in fields], "Fields")
