"""The connection to one XNAT server through xnatpy: TLS, login, retries, one place for errors.

:class:`XnatClient` opens the connection on first use and runs every request through
:meth:`XnatClient.call`: each try bounded to ``deadline_s``, bounded retries with
exponential backoff on transient errors (HTTP 408/429/5xx, dropped connections, timeouts,
damaged downloads, tries past the deadline), one new login on
an HTTP 401, and every other failure turned into an :class:`XnatError` that names what
was being done. No credential is ever echoed in a message (:meth:`XnatClient.scrub`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from vhi.errors import InputError, UnreachableError
from vhi.sources.remote import RETRY_STATUS, RemoteConnection, checked_url, env_value, unreachable

#: xnatpy's own messages go to this logger too (it is passed to ``xnat.connect``).
log = logging.getLogger(__name__)

T = TypeVar("T")

ANY_STATUS = range(100, 600)
OCTET = {"Content-Type": "application/octet-stream"}


class XnatError(InputError):
    """The XNAT server did not give what a session needs; names the session and the cause."""


class _Transfer(Exception):  # noqa: N818 - internal signal, never escapes this package
    """A download arrived damaged (zip, size or digest): worth another try."""


def rows(data: Any) -> list[dict[str, Any]]:
    """The rows of an XNAT ``ResultSet`` answer (none when it has another shape)."""
    try:
        return list(data["ResultSet"]["Result"])
    except (KeyError, TypeError):
        return []


def server_url(site: str, spec: Mapping[str, Any]) -> str:
    """``source.server`` checked: an http(s) URL without credentials, no trailing slash."""
    return checked_url(site, "server", spec.get("server"), "user_env/password_env")


class XnatClient(RemoteConnection):
    """One XNAT server as a site's config describes it (``server`` from :func:`server_url`)."""

    #: xnatpy's own password variables: never echoed either.
    SECRET_ENVS = ("XNAT_PASS", "XNATPY_PASS")
    MESSAGE_CHARS = 200

    def __init__(self, site: str, server: str, spec: Mapping[str, Any]) -> None:
        super().__init__(site, spec)
        self.server = server
        self._conn: Any = None
        self.held = False  # inside ``with source:``: one connection for every operation
        self._depth = 0

    # ------------------------------------------------------------------ connection
    @contextlib.contextmanager
    def caenv_value(self) -> Iterator[None]:
        """xnatpy's ``verify`` is bool-only: a site CA goes through REQUESTS_CA_BUNDLE."""
        if not self.ca_bundle:
            yield
            return
        old = os.environ.get("REQUESTS_CA_BUNDLE")
        os.environ["REQUESTS_CA_BUNDLE"] = self.ca_bundle
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("REQUESTS_CA_BUNDLE", None)
            else:
                os.environ["REQUESTS_CA_BUNDLE"] = old

    def _connect(self) -> Any:
        import requests
        import xnat
        from xnat.exceptions import XNATConnectionError, XNATError, XNATLoginFailedError, XNATSSLError

        where = f"XNAT {self.server} (site {self.site})"
        user, password = env_value(self.user_env), env_value(self.password_env)
        try:
            with self.caenv_value():
                conn = xnat.connect(self.server, user=user, password=password, verify=self.verify,
                                    logger=log, loglevel="WARNING", default_timeout=self.timeout_s,
                                    pilot_timeout=min(self.timeout_s, 30.0))
        except (requests.exceptions.SSLError, XNATSSLError) as exc:
            raise XnatError(where, "TLS certificate verification failed; for a site CA set "
                                   f"source.ca_bundle ({type(exc).__name__})") from None
        except XNATLoginFailedError:
            who = (f"${self.user_env}" if user else "xnatpy's environment or ~/.netrc")
            raise XnatError(where, f"login failed (credentials from {who})") from None
        except (requests.exceptions.RequestException, XNATError, OSError) as exc:
            cause = f"cannot connect ({type(exc).__name__}: {self.scrub(str(exc))})"
            if unreachable(exc) or isinstance(exc, XNATConnectionError):
                raise UnreachableError(self.site, f"{where}: {cause}") from None
            raise XnatError(where, cause) from None
        if self.ca_bundle:
            conn.interface.verify = self.ca_bundle
        return conn

    def connection(self) -> Any:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):  # logging out of a dead session may fail
                conn.disconnect()

    @contextlib.contextmanager
    def operation(self) -> Iterator[None]:
        """One public operation: its connection is closed at the end unless ``held``."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0 and not self.held:
                self.close()

    # ------------------------------------------------------------------ requests
    def call(self, what: str, action: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(connection)`` with bounded retries (exponential backoff) on transient errors.

        Retried: HTTP 408/429/5xx, dropped connections, timeouts, damaged downloads, a try
        that runs past ``deadline_s`` (:meth:`RemoteConnection.deadline`); an HTTP 401 (an
        expired session) logs in again once. Anything else, or the last
        failure, raises XnatError(what, "<action>: <cause>").
        """
        import requests
        from xnat.exceptions import XNATConnectionError, XNATResponseError, XNATSSLError, XNATValueError

        relogged = False
        attempt = 0
        while True:
            attempt += 1
            passed = threading.Event()
            try:
                with self.caenv_value():
                    conn = self.connection()
                    with self.deadline(conn.interface) as passed:
                        return fn(conn)
            except XNATResponseError as exc:
                status = int(getattr(exc, "status_code", 0) or 0)
                if status == 401 and not relogged:
                    log.warning("%s: %s: HTTP 401 (session expired?): logging in again", what, action)
                    relogged = True
                    self.close()
                    attempt -= 1
                    continue
                cause = f"HTTP {status} from the server"
                retry = status in RETRY_STATUS
                down = unreachable(status=status)
            except (requests.exceptions.SSLError, XNATSSLError):
                raise XnatError(what, f"{action}: TLS certificate verification failed") from None
            except (requests.exceptions.RequestException, XNATValueError, _Transfer) as exc:
                cause = (self.deadline_cause() if passed.is_set()
                         else f"{type(exc).__name__}: {self.scrub(str(exc))}")
                retry = True
                # a stall cut at the deadline is the server's answer, not its absence
                down = (unreachable(exc) or isinstance(exc, XNATConnectionError)) and not passed.is_set()
                if isinstance(exc, requests.exceptions.RequestException) or passed.is_set():
                    self.close()  # a half-read stream leaves the connection unusable
            self.give_up_or_wait(XnatError, what, action, cause, retry=retry, attempt=attempt,
                                 unreachable=down)

    def get_rows(self, what: str, action: str, path: str,
                 query: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """The rows of a JSON listing (``GET path?format=json`` unless ``query`` says otherwise)."""
        params = dict(query) if query is not None else {"format": "json"}
        return rows(self.call(what, action, lambda c: c.get_json(path, query=params)))
