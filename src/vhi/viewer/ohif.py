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
#: The builds the platform knows: version -> sha256 of its npm tarball as the registry serves
#: it. The station serves :data:`OHIF_VERSION`; the tests also check the collection against
#: the next release's beta (tests/test_ohif_versions.py).
OHIF_BUILDS = {
    "3.13.2": "b189d3963bfc58e9394a9db8c7be75d07beb029ec211dbb126d47b62969dd3f1",
    "3.14.0-beta.6": "a2dfbbf9fa3e5617676b4cbd9322d405edecd913fada92c36b9adb4e2385c1ab",
}
OHIF_SHA256 = OHIF_BUILDS[OHIF_VERSION]
#: The name of the one data source the station configures.
DATA_SOURCE = "vhi"


def ohif_root(cache: Path | None = None, version: str = OHIF_VERSION) -> Path:
    return (cache or cache_dir()) / "ohif" / version


def ohif_dist(cache: Path | None = None, version: str = OHIF_VERSION) -> Path:
    """The prebuilt OHIF app (``index.html`` and its bundles)."""
    return ohif_root(cache, version) / "package" / "dist"


def is_fetched(cache: Path | None = None, version: str = OHIF_VERSION) -> bool:
    return ((ohif_dist(cache, version) / "index.html").is_file()
            and (ohif_root(cache, version) / ".sha256").is_file())


def fetch_ohif(cache: Path | None = None, version: str = OHIF_VERSION) -> Path:
    """Fetch, check and unpack a known OHIF build (:data:`OHIF_BUILDS`) once; the ``dist`` folder."""
    if version not in OHIF_BUILDS:
        raise ConfigError("OHIF viewer", f"unknown build {version} (known: {', '.join(OHIF_BUILDS)})")
    if is_fetched(cache, version):
        return ohif_dist(cache, version)
    expected = OHIF_BUILDS[version]
    npm = shutil.which("npm")
    if npm is None:
        raise ConfigError("OHIF viewer", "npm is not installed: it fetches the OHIF build "
                                         f"({OHIF_PACKAGE}@{version})")
    root = ohif_root(cache, version)
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vhi-ohif-", dir=root.parent) as tmp:
        proc = subprocess.run([npm, "pack", f"{OHIF_PACKAGE}@{version}", "--json"], cwd=tmp,
                              capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            raise ConfigError("OHIF viewer", f"npm pack {OHIF_PACKAGE}@{version} failed: "
                                             f"{proc.stderr.strip()[-500:]}")
        [tarball] = [Path(tmp) / json.loads(proc.stdout)[0]["filename"]]
        digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
        if digest != expected:
            raise ConfigError("OHIF viewer", f"{tarball.name} has sha256 {digest}, expected "
                                             f"{expected}: not unpacked")
        unpacked = Path(tmp) / "unpacked"
        with tarfile.open(tarball) as archive:
            archive.extractall(unpacked, filter="data")
        (unpacked / ".sha256").write_text(digest + "\n")
        if root.exists():
            shutil.rmtree(root)
        unpacked.rename(root)
    log.info("OHIF %s fetched (sha256 %s) -> %s", version, expected[:12], ohif_dist(cache, version))
    return ohif_dist(cache, version)


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
