"""VHI: volume of hyperintense inflammation from STIR MRI of the sacroiliac joints.

Research use only, not for clinical decisions.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vhi")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
