"""Locations the platform needs that are not part of any config file.

`VHI_SHARED` points at the shared folder that holds the public demo data and the
published model weights; it defaults to ``../shared`` next to the project root.
"""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    """The shared data folder (``$VHI_SHARED``, default ``<project>/../shared``)."""
    env = os.environ.get("VHI_SHARED")
    return Path(env).expanduser().resolve() if env else (PROJECT_ROOT.parent / "shared").resolve()


def demo_data_dir() -> Path:
    """The public bone-MRI data of the paper inside the shared folder."""
    return shared_dir() / "data" / "bone_mri"


def models_dir() -> Path:
    """Where model bundles' weights are looked up (``$VHI_MODELS`` or ``<shared>/models``)."""
    env = os.environ.get("VHI_MODELS")
    return Path(env).expanduser().resolve() if env else shared_dir() / "models"
