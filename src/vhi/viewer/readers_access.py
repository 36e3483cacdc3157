"""The station's readers mode: named readers, each reaching only the sessions assigned to them.

Readers are the config's ``readers:`` who read one of the station's sites and have a
sign-in (``vhi readers add``, argon2-hashed in the run's readers database,
:mod:`vhi.readers.store`). What a reader reaches comes from their current assignments
(:mod:`vhi.readers.assign`): the proxy passes on only requests about those studies, and
their worklist page lists those sessions with where each stands
(:mod:`vhi.readers.progress`).

:class:`SaveRecorder` records every segmentation stored through the station, in either
mode: who, when, its UIDs, its sha256 and the proposal it answers, with its bytes kept
content-addressed in the run's folder, so the collection decides by this record and a
save deleted or replaced on the service can be restored (``vhi restore``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from vhi.config.load import Settings
from vhi.readers.progress import Reading, short_utc
from vhi.readers.store import ReadersStore, Save, utc_iso
from vhi.viewer.access import Access, WorkItem, open_link
from vhi.viewer.dicomweb_routes import Refused, Route
from vhi.viewer.stow import StowPart

log = logging.getLogger(__name__)

#: How long a reader's assigned studies are reused between requests (OHIF sends hundreds).
STUDIES_CACHE_S = 2.0
STATE_WORDS = {"to_do": "to do", "opened": "opened", "saved": "saved"}


class ReadersAccess(Access):
    """Readers of ``sites`` sign in with their password; each reaches their assignments."""

    mode = "readers"

    def __init__(self, settings: Settings, sites: Sequence[str], store: ReadersStore) -> None:
        self.sites = frozenset(sites)
        self.readers = {r.id: r for r in settings.readers if self.sites & set(r.sites)}
        self.store = store
        self.work_dir = Path(settings.work_dir)
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def check_password(self, user: str, password: str) -> bool:
        # an unknown id still costs a hash check (verify_password), so timing tells nothing
        ok = self.store.verify_password(user, password) if user else False
        return ok and user in self.readers

    def display_name(self, user: str) -> str:
        reader = self.readers.get(user)
        return reader.display_name if reader else user

    def _assignments(self, user: str) -> list:
        return [a for a in self.store.assignments(reader=user) if a.site in self.sites]

    def studies(self, user: str) -> frozenset[str]:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(user)
            if cached and now - cached[0] < STUDIES_CACHE_S:
                return cached[1]
        found = frozenset(a.study_uid for a in self._assignments(user) if a.study_uid)
        with self._lock:
            self._cache[user] = (now, found)
        return found

    def worklist(self, user: str) -> list[WorkItem]:
        reading = Reading.of_run(self.work_dir)
        items = []
        for a in self._assignments(user):
            progress = reading.progress(a)
            note = ""
            if len(reading.assignments(session_key=a.session_key)) == 1:  # never for a double read
                others = [c for c in self.store.claims(a.session_key) if c.reader != user]
                if others:
                    who, since = self.display_name(others[0].reader), short_utc(others[0].opened_at)
                    note = f"opened by {who} since {since}"
            items.append(WorkItem(a.session_key, a.site, STATE_WORDS[progress.state],
                                  open_link(a.session_key), role=a.role, due=short_utc(a.due_at)[:10],
                                  overdue=progress.overdue, note=note))
        return sorted(items, key=lambda i: (i.state == "saved", i.due, i.key))

    def open_session(self, user: str, key: str) -> str:
        mine = [a for a in self._assignments(user) if a.session_key == key]
        if not mine:
            holders = self.store.readers_of(key)
            raise Refused(403, f"session {key} is not assigned to you"
                               + (" (it is assigned to another reader)" if holders else ""))
        self.store.open_session(key, user)
        return mine[0].viewer_path


class SaveRecorder:
    """Records what readers store through the station (``on_stored`` of the server)."""

    def __init__(self, store: ReadersStore, session_of: Callable[[str, str], str | None],
                 proposal_of: Callable[[str], str]) -> None:
        """``session_of(user, study_uid)``: the session key of a study for that user (None:
        none); ``proposal_of(session_key)``: the id of the session's current proposal."""
        self.store = store
        self.session_of = session_of
        self.proposal_of = proposal_of

    def __call__(self, user: str, parts: list[StowPart], route: Route) -> None:
        for part in parts:
            key = self.session_of(user, part.study_uid)
            if key is None:
                log.warning("station: %s stored SEG %s in study %s, which is no session of this "
                            "station: not recorded", user, part.sop_uid, part.study_uid)
                continue
            blob = self.store.put_blob(part.data)
            save = self.store.record_save(Save(
                session_key=key, reader=user, saved_at=utc_iso(), study_uid=part.study_uid,
                series_uid=part.series_uid, sop_uid=part.sop_uid, sha256=part.sha256,
                size=len(part.data), blob=blob, proposal=self.proposal_of(key), source="station"))
            log.info("session %s: %s saved SEG %s ('%s', series %s, sha256 %s…) at %s", key, user,
                     save.sop_uid, part.series_description, save.series_uid, save.sha256[:12],
                     save.saved_at)
