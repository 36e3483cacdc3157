"""Where the tests find the project and the shared data.

The package knows nothing of the repository; the tests do: the project's root (its
Snakefile, profiles and config) and the shared folder beside it (``$VHI_SHARED``,
default ``<project>/../shared``).
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("VHI_SHARED") or PROJECT_ROOT.parent / "shared").resolve()
DATA = SHARED / "data" / "bone_mri"
MODELS = Path(os.environ.get("VHI_MODELS") or SHARED / "models").resolve()
