"""Pytest fixtures for tests that need an XNAT.

Load them in a test module with ``pytest_plugins = ["xnat_emulator.fixtures"]``.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import xnat

from .server import XnatEmulator
from .synthetic import PROJECT, TEST_USERS, SyntheticStudy, write_mr_series

__all__ = ["PROJECT", "TEST_USERS", "self_signed_cert", "synthetic_study", "xnat_connection",
           "xnat_emulator"]


@pytest.fixture
def self_signed_cert(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1, made with the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl CLI not available to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


@pytest.fixture
def synthetic_study(tmp_path: Path) -> SyntheticStudy:
    scan1 = write_mr_series(tmp_path / "dicom" / "s1", series_number=1, description="STIR_cor")
    scan2 = write_mr_series(tmp_path / "dicom" / "s2", study_uid=scan1.study_uid,
                            series_number=2, description="T1_cor", seed=1)
    other = write_mr_series(tmp_path / "dicom" / "other", series_number=1, seed=2)
    unarchived = write_mr_series(tmp_path / "dicom" / "unarchived", study_uid=scan1.study_uid,
                                 series_number=3, seed=3)
    return SyntheticStudy(scan1, scan2, other, unarchived)


@pytest.fixture
def xnat_emulator(tmp_path: Path, synthetic_study: SyntheticStudy) -> Iterator[XnatEmulator]:
    """A running emulator with SESS1 (scans 1, 2) and SESS2 (another study) in VHI_TEST."""
    with XnatEmulator(tmp_path / "xnat", users=TEST_USERS) as emulator:
        emulator.seed_session(PROJECT, "SUBJ1", "SESS1",
                              {"1": synthetic_study.scan1.folder, "2": synthetic_study.scan2.folder})
        emulator.seed_session(PROJECT, "SUBJ2", "SESS2", {"1": synthetic_study.other_study.folder})
        yield emulator


@pytest.fixture
def xnat_connection(xnat_emulator: XnatEmulator) -> Iterator[xnat.session.XNATSession]:
    with xnat.connect(xnat_emulator.url, user="alice", password=TEST_USERS["alice"],
                      loglevel="WARNING") as connection:
        yield connection
