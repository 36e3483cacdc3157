"""Programmable faults and the request log.

A :class:`FaultRule` matches a request by HTTP method and a regular expression
searched in the URL path (without the query string; pass ``query=`` to match
that too). Each rule fires for the next ``count`` matching requests, then stays
in the list as spent (``rule.hits`` tells how often it fired).

Kinds:

``status``
    answer with ``status`` and ``body`` instead of handling the request.
``drop``
    handle the request, send the headers (with the full Content-Length) and only
    ``fraction`` of the body, then close the connection.
``truncate_zip``
    handle the request and serve only ``fraction`` of the body, with a
    Content-Length that matches the cut body (a well-framed but corrupt zip).
``delay``
    sleep ``seconds`` before handling the request.
``trickle``
    handle the request, send the headers, then the body ``chunk`` bytes every ``seconds``
    (a server too slow to finish yet never silent long enough for a read timeout).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, urlencode

FaultKind = Literal["status", "drop", "truncate_zip", "delay", "trickle"]
SECRET_KEYS = frozenset({"password", "j_password", "pass", "secret", "token"})


@dataclass
class FaultRule:
    method: str
    path: str
    kind: FaultKind
    count: int = 1
    status: int = 500
    body: str = ""
    fraction: float = 0.5
    seconds: float = 0.0
    chunk: int = 64
    query: str | None = None
    hits: int = 0
    _path_re: re.Pattern[str] = field(init=False, repr=False)
    _query_re: re.Pattern[str] | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._path_re = re.compile(self.path)
        self._query_re = re.compile(self.query) if self.query is not None else None

    @property
    def remaining(self) -> int:
        return max(self.count - self.hits, 0)

    def matches(self, method: str, path: str, query: str) -> bool:
        if self.remaining <= 0:
            return False
        if self.method not in ("*", method.upper()):
            return False
        if not self._path_re.search(path):
            return False
        return self._query_re is None or bool(self._query_re.search(query))


class FaultSet:
    """Thread-safe list of fault rules, consulted once per request."""

    def __init__(self) -> None:
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()

    def add(
        self,
        method: str,
        path: str,
        kind: FaultKind = "status",
        *,
        count: int = 1,
        status: int = 500,
        body: str = "",
        fraction: float = 0.5,
        seconds: float = 0.0,
        chunk: int = 64,
        query: str | None = None,
    ) -> FaultRule:
        if kind not in ("status", "drop", "truncate_zip", "delay", "trickle"):
            raise ValueError(f"unknown fault kind {kind!r}")
        if not 0.0 <= fraction < 1.0:
            raise ValueError("fraction must be in [0, 1)")
        rule = FaultRule(
            method=method.upper(),
            path=path,
            kind=kind,
            count=count,
            status=status,
            body=body or _default_body(status),
            fraction=fraction,
            seconds=seconds,
            chunk=chunk,
            query=query,
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def fail(self, method: str, path: str, status: int, count: int = 1, body: str = "") -> FaultRule:
        """Answer the next ``count`` matching requests with ``status``."""
        return self.add(method, path, "status", count=count, status=status, body=body)

    def drop(self, method: str, path: str, count: int = 1, fraction: float = 0.5) -> FaultRule:
        """Close the connection after part of the response body."""
        return self.add(method, path, "drop", count=count, fraction=fraction)

    def truncate_zip(self, path: str = r"/files$", count: int = 1, fraction: float = 0.5) -> FaultRule:
        """Serve a cut, well-framed body for the next matching GET (a corrupt zip)."""
        return self.add("GET", path, "truncate_zip", count=count, fraction=fraction)

    def delay(self, method: str, path: str, seconds: float, count: int = 1) -> FaultRule:
        return self.add(method, path, "delay", count=count, seconds=seconds)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def take(self, method: str, path: str, query: str) -> FaultRule | None:
        """Return the first live rule matching this request and count the hit."""
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path, query):
                    rule.hits += 1
                    return rule
        return None


def _default_body(status: int) -> str:
    return {
        401: "Authentication required.",
        404: "Not found.",
        409: "Conflict.",
        422: "Unprocessable entity.",
    }.get(status, "Injected server error." if status >= 500 else "")


@dataclass(frozen=True)
class LogEntry:
    """One handled request. Never holds credentials: no headers, no bodies."""

    method: str
    path: str
    query: str
    status: int
    user: str | None
    fault: str | None = None


def sanitize_query(query: str) -> str:
    """Drop the values of secret-looking query parameters."""
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(k, "***" if k.lower() in SECRET_KEYS else v) for k, v in pairs])


class RequestLog:
    def __init__(self) -> None:
        self._entries: list[LogEntry] = []
        self._lock = threading.Lock()

    def append(self, entry: LogEntry) -> None:
        with self._lock:
            self._entries.append(entry)

    @property
    def entries(self) -> list[LogEntry]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def find(self, method: str | None = None, path: str | None = None) -> list[LogEntry]:
        """Entries whose method equals ``method`` and whose path matches regex ``path``."""
        pattern = re.compile(path) if path is not None else None
        return [
            e
            for e in self.entries
            if (method is None or e.method == method.upper())
            and (pattern is None or pattern.search(e.path))
        ]
