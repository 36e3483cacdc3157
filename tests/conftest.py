"""Shared fixtures. The public data is found through VHI_SHARED (default ../shared)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vhi.settings import demo_data_dir, models_dir

DATA = demo_data_dir()
MODELS = models_dir() / "sij_disease_region_unet"

needs_data = pytest.mark.skipif(
    not (DATA / "stir").is_dir(),
    reason=f"public bone-MRI data not found at {DATA} (set VHI_SHARED to the shared folder)",
)
needs_models = pytest.mark.skipif(
    not (MODELS / "SHA256SUMS").is_file(),
    reason=f"published U-Net weights not found at {MODELS} (set VHI_SHARED or VHI_MODELS)",
)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "stir").is_dir():
        pytest.skip(f"public bone-MRI data not found at {DATA} (set VHI_SHARED to the shared folder)")
    return DATA
