"""Who a session is and what its scans are called.

A session is identified by ``site/subject/session``; its scans are named by role
(``stir``, ``t1w``, ``reference`` = the manual normal-marrow mask) and located by a
URI the session's source understands (for the local source: an absolute path).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vhi.errors import ConfigError

#: Site, subject, session and timepoint ids: a letter or digit, then letters, digits, _
#: and -, at most ID_MAX_LENGTH characters in all (they become file names and shell words).
ID_MAX_LENGTH = 128
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]*"
ROLES = ("stir", "t1w", "reference")
#: scan role -> how messages name it
ROLE_NAMES = {"stir": "STIR", "t1w": "T1W", "reference": "normal-marrow mask"}


@dataclass(frozen=True)
class Session:
    """One imaging session and where its scans are (role -> URI or path)."""

    site: str
    subject: str
    session: str
    timepoint: str
    scans: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("site", "subject", "session", "timepoint"):
            check_id(getattr(self, name), name)

    @property
    def key(self) -> str:
        return f"{self.site}/{self.subject}/{self.session}"

    @property
    def has_stir(self) -> bool:
        return bool(self.scans.get("stir"))

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site, "subject": self.subject, "session": self.session,
                "timepoint": self.timepoint, "scans": dict(self.scans)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Session:
        try:
            return cls(site=str(data["site"]), subject=str(data["subject"]),
                       session=str(data["session"]), timepoint=str(data["timepoint"]),
                       scans={str(k): str(v) for k, v in dict(data.get("scans", {})).items() if v})
        except KeyError as exc:
            raise ConfigError("session record", f"missing {exc.args[0]}") from None

    @classmethod
    def from_json(cls, text: str) -> Session:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ConfigError("session record", f"not JSON ({exc})") from None


def check_id(value: str, what: str) -> str:
    """``value`` if it is a valid id (the whole string), else a ConfigError naming it."""
    if not (isinstance(value, str) and len(value) <= ID_MAX_LENGTH
            and re.fullmatch(ID_PATTERN, value)):
        raise ConfigError(f"{what} {value!r:.80}", f"not a valid id: 1 to {ID_MAX_LENGTH} letters, "
                                                   "digits, _ or -, starting with a letter or digit")
    return value


def check_unique(sessions: Iterable[Session], where: object) -> None:
    """A session id may appear once per site; the error names the session."""
    seen: dict[tuple[str, str], Session] = {}
    for s in sessions:
        other = seen.get((s.site, s.session))
        if other is not None:
            raise ConfigError(where, f"duplicate session {s.site}/{s.session} "
                                     f"(subjects {other.subject} and {s.subject})")
        seen[(s.site, s.session)] = s
