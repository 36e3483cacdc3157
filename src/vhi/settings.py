"""Locations the platform needs that are not part of any config file, from the environment.

* ``VHI_SHARED`` – the shared folder with the public demo data and the published model
  weights; default ``../shared`` (relative to the working directory, i.e. beside the
  project when the workflow runs from its root).
* ``VHI_MODELS`` – where model bundles' weights are looked up; default
  ``$VHI_SHARED/models``.
* ``VHI_CACHE`` – downloads the platform keeps outside the repository (the OHIF viewer);
  default ``~/.cache/vhi``.

Nothing here depends on where the package is installed, so ``vhi`` behaves the same
installed from a wheel, in a container, or editable from a checkout.
"""

import os
from pathlib import Path

DEFAULT_SHARED = "../shared"


def shared_dir() -> Path:
    """The shared data folder (``$VHI_SHARED``, default ``../shared``)."""
    return Path(os.environ.get("VHI_SHARED") or DEFAULT_SHARED).expanduser().resolve()


def demo_data_dir() -> Path:
    """The public bone-MRI data of the paper inside the shared folder."""
    return shared_dir() / "data" / "bone_mri"


def models_dir() -> Path:
    """Where model bundles' weights are looked up (``$VHI_MODELS`` or ``<shared>/models``)."""
    env = os.environ.get("VHI_MODELS")
    return Path(env).expanduser().resolve() if env else shared_dir() / "models"


def cache_dir() -> Path:
    """Downloads kept outside the repository (``$VHI_CACHE``, default ``~/.cache/vhi``)."""
    return Path(os.environ.get("VHI_CACHE") or "~/.cache/vhi").expanduser().resolve()
