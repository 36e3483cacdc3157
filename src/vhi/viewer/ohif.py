"""The pinned OHIF viewer build and the ``app-config.js`` the platform writes for it.

OHIF is fetched as the npm package's tarball (``npm pack @ohif/app@<version>``, the
registry's own client), checked against :data:`OHIF_SHA256` and unpacked under
``$VHI_CACHE/ohif/<version>/``; its ``package/dist/`` folder is the prebuilt app. It is
never part of the repository. The config is the shipped ``app-config.js`` followed by
the platform's settings (:func:`app_config`), so the shipped defaults stay in force
except where the station needs another value.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from vhi.errors import ConfigError
from vhi.settings import cache_dir

log = logging.getLogger(__name__)

OHIF_PACKAGE = "@ohif/app"
OHIF_VERSION = "3.13.2"
#: sha256 of ``ohif-app-3.13.2.tgz`` as the npm registry serves it.
OHIF_SHA256 = "b189d3963bfc58e9394a9db8c7be75d07beb029ec211dbb126d47b62969dd3f1"
#: The name of the one data source the station configures.
DATA_SOURCE = "vhi"


def ohif_root(cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "ohif" / OHIF_VERSION


def ohif_dist(cache: Path | None = None) -> Path:
    """The prebuilt OHIF app (``index.html`` and its bundles)."""
    return ohif_root(cache) / "package" / "dist"


def is_fetched(cache: Path | None = None) -> bool:
    return (ohif_dist(cache) / "index.html").is_file() and (ohif_root(cache) / ".sha256").is_file()


def fetch_ohif(cache: Path | None = None) -> Path:
    """Fetch, check and unpack the pinned OHIF build once; the ``dist`` folder."""
    if is_fetched(cache):
        return ohif_dist(cache)
    npm = shutil.which("npm")
    if npm is None:
        raise ConfigError("OHIF viewer", "npm is not installed: it fetches the OHIF build "
                                         f"({OHIF_PACKAGE}@{OHIF_VERSION})")
    root = ohif_root(cache)
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vhi-ohif-", dir=root.parent) as tmp:
        proc = subprocess.run([npm, "pack", f"{OHIF_PACKAGE}@{OHIF_VERSION}", "--json"], cwd=tmp,
                              capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            raise ConfigError("OHIF viewer", f"npm pack {OHIF_PACKAGE}@{OHIF_VERSION} failed: "
                                             f"{proc.stderr.strip()[-500:]}")
        [tarball] = [Path(tmp) / json.loads(proc.stdout)[0]["filename"]]
        digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
        if digest != OHIF_SHA256:
            raise ConfigError("OHIF viewer", f"{tarball.name} has sha256 {digest}, expected "
                                             f"{OHIF_SHA256}: not unpacked")
        unpacked = Path(tmp) / "unpacked"
        with tarfile.open(tarball) as archive:
            archive.extractall(unpacked, filter="data")
        (unpacked / ".sha256").write_text(digest + "\n")
        if root.exists():
            shutil.rmtree(root)
        unpacked.rename(root)
    log.info("OHIF %s fetched (sha256 %s) -> %s", OHIF_VERSION, OHIF_SHA256[:12], ohif_dist(cache))
    return ohif_dist(cache)


def app_config(shipped: str, *, dicomweb_root: str = "/dicom-web", name: str = "VHI cleaning station") -> str:
    """The shipped ``app-config.js`` with the station's settings applied after it.

    One DICOMweb data source at ``dicomweb_root`` (same origin as the viewer, so no CORS
    and no credentials in the browser); SEGs stored as classic BINARY Segmentation
    Storage, explicit VR little endian (what highdicom and the platform read); no
    investigational-use dialog (every SEG the platform writes says research use) and
    no onboarding tour.
    """
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": DATA_SOURCE,
        "configuration": {
            "friendlyName": name, "name": DATA_SOURCE,
            "wadoUriRoot": dicomweb_root, "qidoRoot": dicomweb_root, "wadoRoot": dicomweb_root,
            "qidoSupportsIncludeField": False, "imageRendering": "wadors",
            "thumbnailRendering": "wadors", "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": False, "supportsWildcard": True, "supportsStow": True,
            "dicomUploadEnabled": False, "staticWado": False, "singlepart": "bulkdata,video",
            "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
            "omitQuotationForMultipartRequest": True,
            "segmentation": {"store": {"defaultMode": "bitmap",
                                       "transferSyntaxUID": "1.2.840.10008.1.2.1"}},
        },
    }
    settings = {"defaultDataSourceName": DATA_SOURCE, "dataSources": [source],
                "investigationalUseDialog": {"option": "never"}, "showStudyList": True,
                "maxNumberOfWebWorkers": 2, "showCPUFallbackMessage": False,
                "showWarningMessageForCrossOrigin": False}
    return (f"{shipped.rstrip()}\n\n// --- written by vhi viewer: the cleaning station's settings\n"
            f"Object.assign(window.config, {json.dumps(settings, indent=2)});\n"
            "// no onboarding tour\n"
            "try { localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour'])); } "
            "catch (e) { /* storage disabled */ }\n")
