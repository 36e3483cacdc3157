"""Reading a running ``vhi viewer``'s announcement, and signing in to a station (tests of
the station and the viewer)."""

from __future__ import annotations

import subprocess

import requests


def announced_url(proc: subprocess.Popen, label: str) -> tuple[str, str]:
    """Read ``vhi viewer``'s stderr up to its "cleaning station" line; return that line
    and the URL it gives for ``label`` (``site C`` or ``local site s1``)."""
    line = ""
    while "cleaning station" not in line:
        line = proc.stderr.readline()
        assert line, "vhi viewer exited early"
    assert f"{label}: http" in line, line
    return line, line.split(f"{label}: ", 1)[1].split("/ ", 1)[0]


def announced_links(proc: subprocess.Popen, sessions: int) -> dict[str, str]:
    """``vhi viewer``'s stdout announcement: key -> URL, ``worklist`` first, then one line
    per session awaiting cleaning (``sessions`` of them, as its stderr line says)."""
    links: dict[str, str] = {}
    for _ in range(sessions + 1):
        line = proc.stdout.readline()
        assert line, "vhi viewer exited early"
        key, _, url = line.rstrip("\n").partition("\t")
        links[key] = url
    assert "worklist" in links, links
    return links


def token_session(url: str, *, verify: bool | str = True) -> requests.Session:
    """A client signed in to a single-user station through its printed token URL."""
    session = requests.Session()
    session.trust_env = False
    session.verify = verify
    answer = session.get(url, timeout=30, allow_redirects=False)
    assert answer.status_code == 303, (answer.status_code, answer.text[:200])
    return session


def signin_url(server, access, target: str = "/") -> str:
    """The token URL of an in-process station (:class:`vhi.viewer.access.SingleUser`)."""
    return access.signin_url(server.url, target)
