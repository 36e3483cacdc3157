"""Reading a running ``vhi viewer``'s announcement (tests of the station and the viewer)."""

from __future__ import annotations

import subprocess


def announced_url(proc: subprocess.Popen, label: str) -> tuple[str, str]:
    """Read ``vhi viewer``'s stderr up to its "cleaning station" line; return that line
    and the URL it gives for ``label`` (``site C`` or ``local site s1``)."""
    line = ""
    while "cleaning station" not in line:
        line = proc.stderr.readline()
        assert line, "vhi viewer exited early"
    assert f"{label}: http://127.0.0.1:" in line, line
    return line, line.split(f"{label}: ", 1)[1].split("/ ", 1)[0]
