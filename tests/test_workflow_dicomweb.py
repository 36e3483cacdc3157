"""The workflow against a real Orthanc with faults: each failing session is named, the others finish.

Slow (a workflow run): ``pytest -m slow``. Snakemake reaches Orthanc through a loopback
fault proxy (tests/support/orthanc.py); credentials only in the environment. The disease
region comes from the stand-in model (support.fake_model): the faults are the point.
"""

from __future__ import annotations

import pytest
import yaml

from support.env import unset_env
from support.orthanc import FaultProxy, Orthanc, needs_orthanc, seed_demo
from support.workflow import half_written, snakemake, status_of

USER, CANARY = "vhi-robot", "CANARY-wf-dw-6e0f"



@pytest.mark.slow
@needs_orthanc
@pytest.mark.usefixtures("stand_in_model")
def test_failing_sessions_are_named_and_the_others_complete(tmp_path, data_dir, monkeypatch):
    unset_env(monkeypatch, "DICOMWEB_USER", "DICOMWEB_PASS", "DICOMWEB_TOKEN", "REQUESTS_CA_BUNDLE")
    monkeypatch.setenv("DICOMWEB_USER", USER)
    monkeypatch.setenv("DICOMWEB_PASS", CANARY)
    with Orthanc(tmp_path / "orthanc", users={USER: CANARY}) as orthanc, \
            FaultProxy(orthanc.port) as proxy:
        seeded = seed_demo(orthanc, data_dir, tmp_path / "dicom", ("1003", "4386", "1234", "1013"),
                           drop_stir_instance=("1234",))
        proxy.add("POST", rf"/dicom-web/studies/{seeded['4386_post']['study']}$", status=500)
        # the server goes away in the middle of every retrieval of one session's T1W
        proxy.add("GET", rf"/series/{seeded['1013_pre']['t1w_series']}$", drop=True)
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({"timepoints": ["pre", "post"], "sites": [
            {"name": "A", "reference": "auto",
             "source": {"type": "dicomweb", "url": f"{proxy.url}/dicom-web",
                        "session_label": "{AccessionNumber}", "timepoint_pattern": "_(pre|post)$",
                        "backoff_s": 0.05, "retries": 2}}]}))
        run = tmp_path / "run"
        result = snakemake(run, "--configfile", str(config))
        assert result.returncode != 0
        assert not (run / "results" / "cohort_vhi.csv").exists()  # results/partial/ only
        status = status_of(run, by=("site", "session"), partial=True)
        assert status["A/1003_pre"]["state"] == "awaiting_cleaning"
        row = status["A/4386_post"]
        assert (row["state"], row["step"]) == ("failed", "push_proposal")
        assert row["reason"].startswith("session A/VHIA03/4386_post: storing SEG ")
        assert "(STOW-RS): HTTP 500 from the service (injected fault) (after 3 attempts)" in row["reason"]
        row = status["A/1234_pre"]
        assert (row["state"], row["step"]) == ("failed", "pull_scans")
        assert "STIR series" in row["reason"] and "an instance is missing on the server" in row["reason"]
        row = status["A/1013_pre"]
        assert (row["state"], row["step"]) == ("failed", "pull_scans")
        assert row["reason"].startswith("session A/VHIA14/1013_pre: retrieving T1W series ")
        assert "(after 3 attempts)" in row["reason"]
        segs = {name: [s for s in orthanc.series_of_study(info["study"])
                       if s["00080060"]["Value"] == ["SEG"]] for name, info in seeded.items()}
        assert {name: len(found) for name, found in segs.items()} == {
            "1003_pre": 1, "4386_post": 0, "1234_pre": 0, "1013_pre": 0}
        assert half_written(run / "work", run / "results") == []
    assert CANARY not in result.stdout + result.stderr
    assert [p for p in [config, *run.rglob("*")] if p.is_file() and CANARY.encode() in p.read_bytes()] == []
