"""Users, JSESSION tokens and the checks XNAT applies to each request."""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie


@dataclass
class SessionInfo:
    user: str
    last_seen: float


@dataclass(frozen=True)
class AuthResult:
    """``user`` is None when the request carries no usable credentials.
    ``failed`` is True when it carried wrong Basic credentials.
    ``new_token`` is set when Basic auth opened a new session."""

    user: str | None
    token: str | None = None
    failed: bool = False
    new_token: bool = False


class AuthManager:
    def __init__(self, users: dict[str, str], session_timeout: float = 3600.0) -> None:
        self._users = dict(users)
        self._sessions: dict[str, SessionInfo] = {}
        self._lock = threading.Lock()
        self.session_timeout = session_timeout

    def check_password(self, user: str, password: str) -> bool:
        expected = self._users.get(user)
        return expected is not None and hmac.compare_digest(expected, password)

    def open_session(self, user: str) -> str:
        token = secrets.token_hex(16).upper()
        with self._lock:
            self._sessions[token] = SessionInfo(user=user, last_seen=time.monotonic())
        return token

    def close_session(self, token: str | None) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)

    def expire_all(self) -> None:
        with self._lock:
            self._sessions.clear()

    @property
    def session_count(self) -> int:
        with self._lock:
            return len(self._sessions)

    def user_for_token(self, token: str) -> str | None:
        now = time.monotonic()
        with self._lock:
            info = self._sessions.get(token)
            if info is None:
                return None
            if now - info.last_seen > self.session_timeout:
                del self._sessions[token]
                return None
            info.last_seen = now
            return info.user

    def authenticate(self, authorization: str | None, cookie_header: str | None) -> AuthResult:
        """Basic credentials win over the cookie, as in XNAT's filter chain."""
        if authorization and authorization.lower().startswith("basic "):
            try:
                raw = base64.b64decode(authorization[6:].strip()).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return AuthResult(user=None, failed=True)
            user, _, password = raw.partition(":")
            if not self.check_password(user, password):
                return AuthResult(user=None, failed=True)
            token = self.open_session(user)
            return AuthResult(user=user, token=token, new_token=True)
        token = jsession_from_cookie(cookie_header)
        if token:
            user = self.user_for_token(token)
            if user is not None:
                return AuthResult(user=user, token=token)
        return AuthResult(user=None)


def jsession_from_cookie(cookie_header: str | None) -> str | None:
    if not cookie_header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(cookie_header)
    except CookieError:
        return None
    morsel = jar.get("JSESSIONID")
    return morsel.value if morsel is not None else None
