"""The connection to one DICOMweb service through ``dicomweb-client``: auth, TLS, retries, errors.

:class:`DicomwebConnection` builds one :class:`requests.Session` (credentials from the
environment, else ``~/.netrc`` through requests; TLS verified, a site CA through
``ca_bundle``) and one :class:`dicomweb_client.DICOMwebClient` on it, with the client's
own retrying turned off: every request goes through :meth:`DicomwebConnection.call`,
which bounds each try to ``deadline_s``, retries HTTP 408/429/5xx, dropped connections
and tries past the deadline with exponential back-off and turns every other failure into
a :class:`DicomwebError` naming what was being done.
No credential is ever echoed in a message (:meth:`DicomwebConnection.scrub`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from vhi.errors import InputError
from vhi.sources.remote import RETRY_STATUS, RemoteConnection, checked_url, env_value, unreachable

T = TypeVar("T")


class DicomwebError(InputError):
    """The DICOMweb service did not give what a session needs; names the session and the cause."""


class _Damaged(Exception):  # noqa: N818 - internal signal, never escapes this package
    """A retrieval arrived incomplete or damaged: worth another try."""


def service_url(site: str, spec: Mapping[str, Any]) -> str:
    """``source.url`` checked: an http(s) URL without credentials, no trailing slash."""
    return checked_url(site, "url", spec.get("url"), "user_env/password_env/token_env")


class DicomwebConnection(RemoteConnection):
    """One DICOMweb root (QIDO-RS, WADO-RS and STOW-RS under the same URL)."""

    def __init__(self, site: str, url: str, spec: Mapping[str, Any]) -> None:
        super().__init__(site, spec)
        self.url = url
        self._client: Any = None
        self._http: Any = None  # the requests session the client runs on

    # ------------------------------------------------------------------ connection
    def credentials(self) -> str:
        """Where the credentials come from, for messages (never the credentials)."""
        if env_value(self.token_env):
            return f"a bearer token from ${self.token_env}"
        if env_value(self.user_env) or env_value(self.password_env):
            return f"${self.user_env}/${self.password_env}"
        return "~/.netrc (no credentials in the environment)"

    def _session(self) -> Any:
        import requests

        session = requests.Session()
        session.verify = self.ca_bundle or self.verify
        token = env_value(self.token_env)
        user, password = env_value(self.user_env), env_value(self.password_env)
        if token:
            session.headers["Authorization"] = f"Bearer {token}"
        elif user or password:
            session.auth = (user or "", password or "")
        # neither: requests reads ~/.netrc for the host (trust_env)
        return session

    def client(self) -> Any:
        if self._client is None:
            from dicomweb_client import DICOMwebClient

            self._http = self._session()
            self._client = DICOMwebClient(self.url, session=self._http, timeout=self.timeout_s)
            self._client.set_http_retry_params(retry=False)  # retries are ours (call)
        return self._client

    def http_session(self) -> Any:
        """The requests session the client runs on (credentials, TLS), e.g. for a proxy."""
        self.client()
        return self._http

    def close(self) -> None:
        if self._client is not None:
            self._client = None
            self._http.close()

    # ------------------------------------------------------------------ requests
    def call(self, what: str, action: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(client)`` with bounded retries (exponential back-off) on transient errors.

        Retried: HTTP 408/429/5xx, dropped connections, timeouts, damaged retrievals, a
        try that runs past ``deadline_s`` (:meth:`RemoteConnection.deadline`).
        HTTP 401/403 and anything else, or the last failure, raise
        DicomwebError(what, "<action>: <cause>").
        """
        import requests

        attempt = 0
        while True:
            attempt += 1
            passed = threading.Event()
            try:
                client = self.client()
                with self.deadline(self._http) as passed:
                    return fn(client)
            except requests.exceptions.HTTPError as exc:
                status = exc.response.status_code if exc.response is not None else 0
                if status in (401, 403):
                    raise DicomwebError(what, f"{action}: HTTP {status}: the service refused the "
                                              f"credentials ({self.credentials()})") from None
                body = self.scrub((exc.response.text if exc.response is not None else "").strip())
                cause = f"HTTP {status} from the service" + (f" ({body[:200]})" if body else "")
                retry = status in RETRY_STATUS
                down = unreachable(status=status)
            except requests.exceptions.SSLError:
                raise DicomwebError(what, f"{action}: TLS certificate verification failed; for a "
                                          "site CA set source.ca_bundle") from None
            except (requests.exceptions.RequestException, _Damaged) as exc:
                cause = (self.deadline_cause() if passed.is_set()
                         else f"{type(exc).__name__}: {self.scrub(str(exc))}")
                retry = True
                # a stall cut at the deadline is the server's answer, not its absence
                down = unreachable(exc) and not passed.is_set()
                if isinstance(exc, requests.exceptions.RequestException) or passed.is_set():
                    self.close()  # a half-read stream leaves the connection unusable
            self.give_up_or_wait(DicomwebError, what, action, cause, retry=retry, attempt=attempt,
                                 unreachable=down)
