"""Shared fixtures. The public data is found through VHI_SHARED (default ../shared)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.paths import DATA, SHARED


@pytest.fixture(scope="session", autouse=True)
def shared_folder() -> Iterator[Path]:
    """The package finds the shared folder through VHI_SHARED; the tests set it for their
    session (and restore the environment after) so the package sees what they see."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VHI_SHARED", str(SHARED))
        yield SHARED


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "stir").is_dir():
        pytest.skip(f"public bone-MRI data not found at {DATA} (set VHI_SHARED to the shared folder)")
    return DATA
