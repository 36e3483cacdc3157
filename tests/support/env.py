"""Environment changes a test makes, undone after it."""

from __future__ import annotations

import pytest


def unset_env(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Remove ``names`` from ``os.environ`` for this test; after it each is back as it was
    (present with its value, or absent), even if the code under test set it meanwhile.

    ``monkeypatch.delenv(name, raising=False)`` alone records nothing for a variable that is
    absent, so one the test's code then sets (``vhi.provenance.mark_run`` sets two) would
    stay set for every later test. Setting it first makes monkeypatch remember its absence.
    """
    for name in names:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


#: What every process the suite starts inherits (conftest sets it before anything imports
#: torch; the image's and the unprivileged user's runs are given it): the suite runs more
#: pytest workers than cores, and OpenMP's threads (the U-Net's) then spin on the CPU while
#: they wait for a descheduled sibling. Sleeping instead, a segmentation beside one busy
#: process takes 9 core-s, not 18, with the same mask.
OVERSUBSCRIBED_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
