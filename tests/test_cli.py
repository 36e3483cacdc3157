"""The `vhi` command: outputs, sidecars and clear errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from vhi.cli import main

from support.data import middle_slices, needs_models


def _nifti(path, array, affine=None, dtype=np.int16):
    nib.save(nib.Nifti1Image(np.asarray(array).astype(dtype), np.eye(4) if affine is None else affine),
             path)
    return path


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".part" in p.name)


@pytest.fixture
def scan_1003(data_dir):
    return {
        "stir": data_dir / "stir/1003_STIR.nii.gz",
        "t1w": data_dir / "t1w/1003_T1W.nii.gz",
        "region": data_dir / "disease_region/1003_disease_region.nii.gz",
        "normal": data_dir / "normal_marrow/1003_normal_marrow.nii.gz",
        "r11": data_dir / "inflammation/R11/1003_inflammation_R11.nii.gz",
    }


def test_propose_writes_labels_and_sidecar_with_thresholds(scan_1003, tmp_path, capsys):
    out = tmp_path / "proposal.nii.gz"
    used = tmp_path / "reference_used.nii.gz"
    assert main(["propose", "--stir", str(scan_1003["stir"]), "--disease-region",
                 str(scan_1003["region"]), "--reference", str(scan_1003["normal"]),
                 "--reference-out", str(used), "--out", str(out)]) == 0
    manual = nib.load(scan_1003["normal"]).get_fdata() == 1
    np.testing.assert_array_equal(np.asarray(nib.load(used).dataobj) > 0, manual)
    labels = np.asarray(nib.load(out).dataobj)
    assert (np.count_nonzero(labels), np.count_nonzero(labels == 2)) == (6031, 3461)
    side = json.loads((tmp_path / "proposal.json").read_text())
    assert side["lower"] == pytest.approx(480.2175847, rel=1e-6)
    assert side["upper"] == pytest.approx(505.2000024, rel=1e-6)
    assert side["proposal_ml"] == pytest.approx(7.051551634, rel=1e-6)
    prov = side["provenance"]
    assert prov["software"]["name"] == "vhi" and len(prov["inputs"]["stir"]["sha256"]) == 64
    assert np.allclose(nib.load(out).affine, nib.load(scan_1003["stir"]).affine)

    assert main(["measure", "--mask", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["voxels"] == 6031
    assert result["vhi_ml"] == pytest.approx(7.051551634, rel=1e-6)


def test_measure_prints_vhi_of_a_reader_mask(scan_1003, capsys):
    assert main(["measure", "--mask", str(scan_1003["r11"])]) == 0
    voxels = int(np.count_nonzero(nib.load(scan_1003["r11"]).get_fdata()))
    text = capsys.readouterr().out
    assert f"{voxels * 0.00116921768:.4f} ml" in text and f"({voxels} voxels" in text


@needs_models
@pytest.mark.slow
def test_segment_writes_mask_with_model_provenance(scan_1003, tmp_path):
    out, t1w = tmp_path / "dr.nii.gz", middle_slices(scan_1003["t1w"], tmp_path / "1003_T1W.nii.gz")
    assert main(["segment", "--t1w", str(t1w), "--out", str(out), "--device", "cpu"]) == 0
    side = json.loads((tmp_path / "dr.json").read_text())
    assert side["model"]["name"] == "sij_disease_region_unet"
    assert side["model"]["sha256"]["model_1.pt"].startswith("def33e95")
    assert side["device"] == "cpu"
    assert side["voxels"] == int(np.asarray(nib.load(out).dataobj).sum())


def _propose_args(stir, region, reference, out):
    return ["propose", "--stir", str(stir), "--disease-region", str(region), "--reference",
            str(reference), "--out", str(out)]


def test_bad_inputs_fail_clearly_and_leave_nothing(scan_1003, tmp_path, caplog):
    shape = nib.load(scan_1003["stir"]).shape
    affine = nib.load(scan_1003["stir"]).affine
    zero_stir = _nifti(tmp_path / "zero_stir.nii.gz", np.zeros(shape), affine)
    flat = _nifti(tmp_path / "flat.nii.gz", np.ones((336, 336)), dtype=np.int16)
    other_shape = _nifti(tmp_path / "small_mask.nii.gz", np.ones((336, 336, 20)), affine, np.uint8)
    empty_ref = _nifti(tmp_path / "empty_ref.nii.gz", np.zeros(shape), affine, np.uint8)
    out = tmp_path / "out" / "proposal.nii.gz"
    cases = [
        (_propose_args(tmp_path / "missing.nii.gz", scan_1003["region"], scan_1003["normal"], out),
         "missing.nii.gz: file not found"),
        (_propose_args(zero_stir, scan_1003["region"], scan_1003["normal"], out),
         "zero_stir.nii.gz: image is all zero"),
        (_propose_args(flat, scan_1003["region"], scan_1003["normal"], out),
         "flat.nii.gz: expected a 3-D volume"),
        (_propose_args(scan_1003["stir"], other_shape, scan_1003["normal"], out),
         "small_mask.nii.gz: not on the grid of 1003_STIR.nii.gz: shape"),
        (_propose_args(scan_1003["stir"], scan_1003["region"], empty_ref, out),
         "empty_ref.nii.gz: mask holds no voxels"),
        (["measure", "--mask", str(tmp_path / "nope.nii.gz")], "nope.nii.gz: file not found"),
    ]
    for argv, message in cases:
        caplog.clear()
        assert main(argv) == 2, message
        assert message in caplog.text
        assert not out.exists()
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@needs_models
def test_nan_t1w_is_refused_by_segment(scan_1003, tmp_path, caplog):
    img = nib.load(scan_1003["t1w"])
    data = img.get_fdata()
    data[10, 10, 3] = np.nan
    bad = tmp_path / "nan_T1W.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.float32), img.affine), bad)
    out = tmp_path / "dr.nii.gz"
    assert main(["segment", "--t1w", str(bad), "--out", str(out), "--device", "cpu"]) == 2
    assert "nan_T1W.nii.gz: 1 voxels are NaN or infinite" in caplog.text
    assert not out.exists() and not _leftovers(tmp_path)


def test_corrupt_nifti_is_refused(tmp_path, scan_1003, caplog):
    bad = tmp_path / "corrupt_STIR.nii.gz"
    bad.write_bytes(scan_1003["stir"].read_bytes()[:5000])  # truncated gzip
    assert main(_propose_args(bad, scan_1003["region"], scan_1003["normal"], tmp_path / "p.nii.gz")) == 2
    assert "corrupt_STIR.nii.gz: cannot read" in caplog.text
    assert not (tmp_path / "p.nii.gz").exists() and not _leftovers(tmp_path)


def test_command_exits_non_zero_with_message(tmp_path):
    vhi = Path(sys.executable).with_name("vhi")  # the installed entry point
    proc = subprocess.run([str(vhi), "measure", "--mask", str(tmp_path / "absent.nii.gz")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "absent.nii.gz: file not found" in proc.stderr


def test_propose_with_automatic_reference_records_it(scan_1003, tmp_path):
    out = tmp_path / "auto.nii.gz"
    ref_out = tmp_path / "reference.nii.gz"
    assert main(["propose", "--stir", str(scan_1003["stir"]), "--disease-region",
                 str(scan_1003["region"]), "--reference", "auto", "--reference-out", str(ref_out),
                 "--out", str(out), "--scan", "demo/9/1003"]) == 0
    side = json.loads((tmp_path / "auto.json").read_text())
    assert side["reference"]["mode"] == "auto" and side["scan"] == "demo/9/1003"
    assert 0 < side["upper"] - side["lower"] < side["thresholds"]["iqr"] / 2
    assert side["lower"] == pytest.approx(480.2175847, rel=0.15)  # manual reference's, within 15 %
    reference = np.asarray(nib.load(ref_out).dataobj) > 0
    assert reference.sum() == side["reference"]["stats"]["n_voxels"]
    stir = nib.load(scan_1003["stir"]).get_fdata()
    assert stir[reference].max() == pytest.approx(side["upper"])


def test_light_commands_do_not_import_torch():
    """Every rule starts a `vhi` process: only `segment` may pay for importing torch."""
    code = ("import sys; from vhi.cli import build_parser; build_parser(); "
            "import vhi.api, vhi.cohort.plan, vhi.results.tables; "
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"
