"""What the server sources (XNAT, DICOMweb) share about their connection.

The URL check (:func:`checked_url`), and :class:`RemoteConnection`: the settings every
site's connection has (the environment variables its credentials come from, TLS
verification and a site CA, retries with back-off, a timeout per read and a deadline per
request) and the scrubbing that keeps any credential out of a message. Credentials are
read from the environment only when used, never kept in the config or written anywhere.
A server that cannot be reached (connections refused or dropped, timeouts, HTTP
502/503/504 until the retries are spent) is a :class:`vhi.errors.UnreachableError` naming
the site: the environment, not bad input.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from vhi.errors import ConfigError, UnreachableError, VhiError

log = logging.getLogger(__name__)

#: Statuses worth another try: the server or a proxy had a bad moment.
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def env_value(name: str) -> str | None:
    """The environment variable ``name`` (None when unnamed, unset or empty)."""
    value = os.environ.get(name) if name else None
    return value or None


def checked_url(site: str, key: str, value: Any, credentials: str) -> str:
    """A remote source's ``source.<key>``: an http(s) URL without credentials (they come
    from ``credentials``: the environment variables named in the config, or ~/.netrc),
    without a trailing slash."""
    url = str(value or "").rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"site {site} source.{key}", f"not an http(s) URL: {url!r}")
    if parts.username or parts.password:
        raise ConfigError(f"site {site} source.{key}", "credentials do not belong in the URL: "
                          f"set them in the environment ({credentials}) or ~/.netrc")
    return url


#: Answers that say the server behind a gateway is not there (bad gateway, unavailable,
#: gateway timeout); an HTTP 500 is the server's own answer about what was asked.
DOWN_STATUS = frozenset({502, 503, 504})


def unreachable(exc: BaseException | None = None, status: int = 0) -> bool:
    """Whether a failed request says the server is not there: no connection, a timeout,
    or an answer in :data:`DOWN_STATUS`."""
    import requests

    if exc is not None:
        return isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout)
    return status in DOWN_STATUS


class RemoteConnection:
    """The connection settings of one site's server, from its (validated) source config."""

    #: Further environment variables whose values never appear in a message.
    SECRET_ENVS: ClassVar[tuple[str, ...]] = ()
    #: Messages from the server are cut to this many characters.
    MESSAGE_CHARS: ClassVar[int] = 300

    def __init__(self, site: str, spec: Mapping[str, Any]) -> None:
        self.site = site
        self.user_env = str(spec["user_env"])
        self.password_env = str(spec["password_env"])
        self.token_env = str(spec.get("token_env", ""))
        self.verify = bool(spec["verify"])
        self.ca_bundle = str(spec["ca_bundle"])
        if self.ca_bundle and not Path(self.ca_bundle).is_file():
            raise ConfigError(f"site {site} source.ca_bundle", f"file not found: {self.ca_bundle}")
        self.retries = int(spec["retries"])
        self.backoff_s = float(spec["backoff_s"])
        self.timeout_s = float(spec["timeout_s"])
        #: The most one request may take in all (None: no bound): ``source.deadline_s``.
        self.deadline_s = float(spec.get("deadline_s") or 0) or None

    def scrub(self, text: str) -> str:
        """``text`` with every credential of this connection replaced by ``***``, cut short."""
        for name in (self.password_env, self.token_env, *self.SECRET_ENVS):
            secret = env_value(name)
            if secret:
                text = text.replace(secret, "***")
        limit = self.MESSAGE_CHARS
        return text if len(text) <= limit else text[:limit] + "…"

    @property
    def attempts(self) -> int:
        """Tries of one request: the first and ``retries`` more."""
        return max(self.retries, 0) + 1

    @contextlib.contextmanager
    def deadline(self, session: Any) -> Iterator[threading.Event]:
        """Bound the requests made on ``session`` (a :class:`requests.Session`) in this block
        to :attr:`deadline_s` in all; the event yielded is set once it has passed.

        A read timeout never fires while a server trickles bytes, so a pull could hang
        forever. Here every answer's socket is noted when its headers arrive (a response
        hook), and when the deadline passes each is shut down: the read under way fails at
        once, as a dropped connection, and the caller counts the try as failed.
        """
        passed = threading.Event()
        if self.deadline_s is None:
            yield passed
            return
        sockets: list[socket.socket] = []
        lock = threading.Lock()

        def shut(sock: socket.socket) -> None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

        def note(response: Any, *args: Any, **kwargs: Any) -> Any:
            sock = getattr(getattr(response.raw, "connection", None), "sock", None)
            if sock is not None:
                with lock:
                    sockets.append(sock)
                    if passed.is_set():
                        shut(sock)
            return response

        def expire() -> None:
            with lock:
                passed.set()
                for sock in sockets:
                    shut(sock)

        session.hooks["response"].append(note)
        timer = threading.Timer(self.deadline_s, expire)
        timer.daemon = True
        timer.start()
        try:
            yield passed
        finally:
            timer.cancel()
            session.hooks["response"].remove(note)

    def deadline_cause(self) -> str:
        """Why a try that ran past :attr:`deadline_s` failed."""
        return (f"no complete answer within {self.deadline_s:g} s (source.deadline_s): the server "
                "sends too slowly or stalls")

    def give_up_or_wait(self, error: type[VhiError], what: str, action: str, cause: str, *,
                        retry: bool, attempt: int, unreachable: bool = False) -> None:
        """After failed try ``attempt``: raise ``error(what, "<action>: <cause>")`` when the
        cause is final or the tries are spent, else wait the back-off (doubling each time).
        ``unreachable``: the cause is the server's absence (:func:`unreachable`), so the
        error raised is :class:`vhi.errors.UnreachableError` naming this site."""
        if not retry or attempt >= self.attempts:
            tries = f" (after {attempt} attempts)" if attempt > 1 else ""
            if unreachable:
                raise UnreachableError(self.site, f"{what}: {action}: {cause}{tries}")
            raise error(what, f"{action}: {cause}{tries}")
        delay = self.backoff_s * 2 ** (attempt - 1)
        log.warning("%s: %s: %s; retry %d of %d in %.1f s", what, action, cause, attempt,
                    self.attempts - 1, delay)
        time.sleep(delay)


__all__ = ["DOWN_STATUS", "RETRY_STATUS", "RemoteConnection", "checked_url", "env_value", "unreachable"]
