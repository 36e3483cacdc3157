"""Who may use the cleaning station, and what each may reach.

Two kinds of access, one interface (:class:`Access`) that the web app asks on every
request:

* :class:`SingleUser` – the single-user mode (a config without ``readers:``): one person
  at the machine that runs the station; a token made for this run, in the URLs the
  station prints, signs the browser in; every session of the site is theirs.
* readers mode (:mod:`vhi.viewer.readers_access`) – named readers sign in with the
  password the data manager set (``vhi readers add``); each reaches only the studies
  assigned to them.
"""

from __future__ import annotations

import getpass
import hmac
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vhi.viewer.dicomweb_routes import Refused


@dataclass(frozen=True)
class WorkItem:
    """One row of a worklist page."""

    key: str  # the session key, site/subject/session
    site: str
    state: str  # "to do", "opened", "saved"
    link: str  # the station's /open/... route
    role: str = ""  # "first" / "second" of a double read
    due: str = ""  # ISO date
    overdue: bool = False
    note: str = ""  # e.g. "opened by B since …"


@dataclass(frozen=True)
class Awaiting:
    """A session whose proposal waits for cleaning at the station: its study and OHIF route."""

    key: str
    site: str
    study_uid: str
    viewer_path: str  # e.g. /segmentation?StudyInstanceUIDs=...


class Access(ABC):
    """What the station asks about users; ``mode`` is ``token`` or ``readers``."""

    mode = "token"

    def check_password(self, user: str, password: str) -> bool:
        return False

    def user_for_token(self, token: str) -> str | None:
        return None

    def display_name(self, user: str) -> str:
        return user

    @abstractmethod
    def studies(self, user: str) -> frozenset[str] | None:
        """The studies ``user`` may reach through the proxy; None: every study of the site."""

    @abstractmethod
    def worklist(self, user: str) -> list[WorkItem]:
        """The sessions on ``user``'s worklist page."""

    @abstractmethod
    def open_session(self, user: str, key: str) -> str:
        """Record that ``user`` opens session ``key``; the OHIF route to go to.
        :class:`Refused` when they may not."""


def open_link(key: str) -> str:
    return f"/open/{key}"


class SingleUser(Access):
    """One user, signed in by the run's token; the sessions come from ``awaiting()``."""

    mode = "token"

    def __init__(self, awaiting: Callable[[], Sequence[Awaiting]], *, user: str | None = None,
                 token: str | None = None) -> None:
        self.awaiting = awaiting
        self.user = user or _os_user()
        self.token = token or secrets.token_urlsafe(24)

    def user_for_token(self, token: str) -> str | None:
        return self.user if token and hmac.compare_digest(token, self.token) else None

    def studies(self, user: str) -> frozenset[str] | None:
        return None

    def worklist(self, user: str) -> list[WorkItem]:
        return [WorkItem(a.key, a.site, "to do", open_link(a.key)) for a in self.awaiting()]

    def open_session(self, user: str, key: str) -> str:
        for a in self.awaiting():
            if a.key == key:
                return a.viewer_path
        raise Refused(404, f"session {key} is not awaiting cleaning here")

    def signin_url(self, base: str, target: str = "/") -> str:
        """The URL that signs the browser in and goes to ``target`` (what the station prints)."""
        from urllib.parse import quote

        return f"{base.rstrip('/')}/auth?token={self.token}&next={quote(target, safe='')}"


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "station-user"
