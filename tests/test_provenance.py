"""The provenance block every sidecar carries."""

from __future__ import annotations

from vhi.config.load import resolve_config
from vhi.fileio import sha256_file
from vhi.provenance import build_provenance, mark_run

from support.env import unset_env


def test_provenance_records_software_inputs_and_the_run(tmp_path, monkeypatch):
    src = tmp_path / "in.txt"
    src.write_text("x")
    unset_env(monkeypatch, "VHI_RUN_ID", "VHI_CONFIG_SHA256")
    prov = build_provenance(step="demo", inputs={"stir": src}, model={"name": "m"}, device="cpu",
                            parameters={"k": 1})
    assert prov["step"] == "demo" and prov["device"] == "cpu" and prov["model"] == {"name": "m"}
    assert prov["inputs"]["stir"] == {"path": str(src), "sha256": sha256_file(src)}
    assert prov["intended_use"] == "research use only, not for clinical decisions"
    assert {"torch", "numpy", "nibabel"} <= set(prov["software"]["libraries"])
    assert "run" not in prov

    monkeypatch.setenv("VHI_RUN_ID", "20261128T000000Z-abcd1234")
    monkeypatch.setenv("VHI_CONFIG_SHA256", "f" * 64)
    prov = build_provenance(step="demo", inputs={"stir": src}, hashed_inputs=())
    assert prov["run"] == {"run_id": "20261128T000000Z-abcd1234", "config_sha256": "f" * 64}
    assert "sha256" not in prov["inputs"]["stir"]


def test_config_digest_changes_with_the_config():
    base = {"sites": [{"name": "a", "source": {"type": "local", "root": "/x", "sheet": "s.csv"}}]}
    other = {**base, "model": {"device": "cuda"}}
    assert resolve_config(base).digest == resolve_config(base).digest
    assert resolve_config(base).digest != resolve_config(other).digest
    assert len(resolve_config(base).digest) == 64


def test_mark_run_keeps_an_inherited_run_id(monkeypatch):
    unset_env(monkeypatch, "VHI_RUN_ID", "VHI_CONFIG_SHA256")
    first = mark_run("a" * 64)
    assert mark_run("b" * 64) == first  # a cluster job re-reading the Snakefile keeps it
    prov = build_provenance(step="x")
    assert prov["run"] == {"run_id": first, "config_sha256": "b" * 64}
