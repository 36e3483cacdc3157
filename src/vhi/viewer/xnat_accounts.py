"""Readers of an XNAT site sign in to the station with their XNAT account.

An XNAT site's readers clean in XNAT's own OHIF viewer, signed in to XNAT; the station
serves them only their worklist (its links open each session in XNAT's viewer). Their
password is checked by XNAT itself: the documented form login (``POST
/data/services/auth``, ``username``/``password``: 200 with a session id, 401 when wrong;
``XNAT_PROTOCOL.md`` §1.1), whose session is closed again at once (``DELETE
/data/JSESSION``). The station keeps no XNAT password: it only learns yes or no.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from vhi.readers.store import ReadersStore
from vhi.viewer.readers_access import ReadersAccess

log = logging.getLogger(__name__)


class XnatReadersAccess(ReadersAccess):
    """:class:`ReadersAccess` whose passwords are checked by the site's XNAT."""

    def __init__(self, settings: Any, site: Any, store: ReadersStore) -> None:
        super().__init__(settings, [site.name], store)
        spec: Mapping[str, Any] = site.source
        self.server = str(spec["server"]).rstrip("/")
        ca_bundle = str(spec.get("ca_bundle") or "")
        self.verify: bool | str = (ca_bundle or True) if spec.get("verify", True) else False
        self.timeout_s = float(spec.get("timeout_s", 120))

    def check_password(self, user: str, password: str) -> bool:
        import requests

        if user not in self.readers or not password:
            return False
        with requests.Session() as http:
            http.trust_env = False  # never ~/.netrc's account instead of the reader's
            try:
                answer = http.post(f"{self.server}/data/services/auth", timeout=self.timeout_s,
                                   data={"username": user, "password": password}, verify=self.verify)
            except requests.RequestException as exc:
                log.warning("station: XNAT %s did not answer a sign-in (%s)", self.server,
                            type(exc).__name__)
                return False
            ok = answer.status_code == 200 and bool(answer.text.strip())
            if ok:
                try:
                    http.delete(f"{self.server}/data/JSESSION", timeout=self.timeout_s,
                                verify=self.verify)
                except requests.RequestException:
                    log.debug("station: closing the XNAT session of %s's sign-in failed", user)
        return ok
