"""The fault matrix: each failure a data manager (or a hostile input) meets, met as they
would meet it, and what the platform promises after it.

Promises: a rerun of the documented command after any failure finishes the work with
the numbers of a clean run; nothing is half-written; nothing is silently dropped or
silently wrong; bad input fails naming the file; the radiologist's files are never
written over.

The workflow cases run the real workflow (``snakemake --profile profiles/local``) on two
demo sessions, with real signals sent to the run's process group; the per-file cases call
the ``vhi`` command or the package on crafted files. The disease region comes from the
stand-in model (support.fake_model; in the interrupted runs taking as long per scan as the
U-Net on the CPU): what is proven is the workflow's, whatever the model draws; the U-Net's
own output is tests/test_model.py's and tests/test_workflow.py's.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from vhi.cohort.ids import Session
from vhi.cohort.sheet import read_sheet
from vhi.config.load import resolve_config
from vhi.errors import EXIT_ENVIRONMENT, EXIT_INPUT, ConfigError, InputError
from vhi.imaging.nifti import load_image, load_mask

from support.data import needs_data
from support.paths import DATA
from support.workflow import half_written, snakemake, snakemake_command, status_of, workflow_env

VHI = str(Path(sys.executable).with_name("vhi"))
#: Two demo sessions with STIR, T1W, normal-marrow mask, a reader mask and a "cleaned"
#: mask (reader R11's, standing in for the radiologist's).
SESSIONS = {"1003": "09", "1013": "14"}
#: Columns that differ between two runs by design.
VARYING = ["collected_at", "cleaned_uri", "stir_uri", "t1w_uri"]


# --------------------------------------------------------------------------- helpers
def vhi(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VHI, "--no-progress", *args], capture_output=True, text=True,
                          env=workflow_env(), check=False)


def write_cohort(root: Path, sessions: dict[str, str] = SESSIONS, *,
                 extra_rows: list[list[str]] = ()) -> Path:
    """A local cohort under ``root`` (scans, reader and cleaned masks copied from the demo
    data; sheet paths relative to root); returns its config."""
    rows = []
    for session, subject in sessions.items():
        files = {"stir": DATA / "stir" / f"{session}_STIR.nii.gz",
                 "t1w": DATA / "t1w" / f"{session}_T1W.nii.gz",
                 "normal_marrow": DATA / "normal_marrow" / f"{session}_normal_marrow.nii.gz"}
        for path in files.values():
            (root / "scans").mkdir(parents=True, exist_ok=True)
            shutil.copy(path, root / "scans" / path.name)
        r11 = DATA / "inflammation" / "R11" / f"{session}_inflammation_R11.nii.gz"
        for dest in (root / "readers" / f"{session}_R11.nii.gz",
                     root / "cleaned" / "demo" / subject / f"{session}.nii.gz"):
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(r11, dest)
        rows.append(["demo", subject, session, "pre",
                     *(f"scans/{files[k].name}" for k in ("stir", "t1w", "normal_marrow"))])
    with (root / "sheet.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["site", "subject", "session", "timepoint", "stir", "t1w", "normal_marrow"])
        writer.writerows([*rows, *extra_rows])
    source = {"type": "local", "root": str(root), "sheet": str(root / "sheet.csv"),
              "outbox": str(root / "outbox"), "reader_masks": {"R11": "readers/{session}_R11.nii.gz"}}
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({"sites": [{"name": "demo", "source": source}]}))
    return config


def cohort_numbers(run: Path) -> pd.DataFrame:
    """results/cohort_vhi.csv without the columns that differ between runs by design."""
    table = pd.read_csv(run / "results" / "cohort_vhi.csv", dtype={"subject": str, "session": str})
    return table.drop(columns=VARYING).set_index("session").sort_index()


def _as_a_terminal_would() -> None:
    """In the child, before exec: SIGINT as a terminal gives its jobs (the default action).

    An ignored signal stays ignored across exec, so a run started by tests that themselves
    run with SIGINT ignored (a background job of a script, as some CI runners start them)
    would ignore the Ctrl-C these tests send it, and finish."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(run: Path, config: Path) -> subprocess.Popen[str]:
    """The documented command in its own process group, with SIGINT's default action (as a
    terminal would run it); each segmentation of the stand-in model takes the U-Net's time
    on the CPU, so that an interrupt lands mid-segmentation."""
    return subprocess.Popen(snakemake_command(run, "--configfile", str(config)), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**workflow_env(), "VHI_FAKE_SEGMENT_S": "3"},
                            start_new_session=True,
                            preexec_fn=_as_a_terminal_would)  # noqa: PLW1509 - one signal call


def signal_when_segmenting(proc: subprocess.Popen[str], run: Path, sig: int, *,
                           again_after_s: float | None = None) -> str:
    """Send ``sig`` to the run's process group once a segmentation job is running (and once
    more ``again_after_s`` later: a user pressing Ctrl-C twice)."""
    deadline = time.monotonic() + 300
    while not list((run / "logs").rglob("segment_disease_region.log")):
        assert proc.poll() is None, "the run ended before segmenting"
        assert time.monotonic() < deadline, "no segmentation started in 300 s"
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(proc.pid, sig)
    if again_after_s is not None:
        time.sleep(again_after_s)
        os.killpg(proc.pid, sig)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, output[-3000:]
    return output


def final_results_absent(run: Path) -> bool:
    return not (run / "results" / "cohort_vhi.csv").exists()


def rerun_finishes(run: Path, config: Path) -> subprocess.CompletedProcess[str]:
    result = snakemake(run, "--configfile", str(config))
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    assert "Nothing to be done" not in result.stdout + result.stderr
    assert not half_written(run / "work", run / "results")
    assert not (run / "results" / "partial").exists()  # stale partial results removed
    return result


# --------------------------------------------------------------------------- workflow
def workflow_case(test):
    """A case that runs the real workflow on the demo sessions."""
    return pytest.mark.slow(needs_data(test))


@pytest.fixture(scope="module", autouse=True)
def stand_in_for_the_module(stand_in_bin: Path) -> Iterator[None]:
    """conftest's stand_in_model for the whole module (clean_run is module-scoped)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VHI_TEST_BIN", str(stand_in_bin))
        yield


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two sessions through one uninterrupted run: the numbers every case must equal."""
    if not (DATA / "stir").is_dir():
        pytest.skip(f"public bone-MRI data not found at {DATA}")
    root = tmp_path_factory.mktemp("clean")
    config = write_cohort(root / "cohort")
    result = snakemake(root / "run", "--configfile", str(config))
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    return root / "run"


@workflow_case
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_an_interrupted_run_is_finished_by_the_same_command(sig: int, clean_run: Path,
                                                            tmp_path: Path) -> None:
    config = write_cohort(tmp_path / "cohort")
    run = tmp_path / "run"
    output = signal_when_segmenting(start(run, config), run, sig)
    assert final_results_absent(run), output[-3000:]  # never written as if complete
    if sig == signal.SIGINT:  # what finished is in results/partial/, as the docs say
        assert (run / "results" / "partial" / "status.csv").is_file(), output[-3000:]
    if sig == signal.SIGKILL:
        # Snakemake's lock outlives a killed run: the documented way out is --unlock
        locked = snakemake(run, "--configfile", str(config))
        assert locked.returncode != 0
        assert "--unlock" in locked.stdout + locked.stderr
        assert snakemake(run, "--configfile", str(config), "--unlock").returncode == 0
    rerun_finishes(run, config)
    pd.testing.assert_frame_equal(cohort_numbers(run), cohort_numbers(clean_run))


@pytest.mark.slow
def test_ctrl_c_twice_still_leaves_the_partial_results(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C, then Ctrl-C again while the run stops (a user pressing twice): the second
    used to interrupt Snakemake's stopping or the error handler, leaving no results/partial/
    and a traceback. Now it is reported and the partial results are written; the same
    command then finishes. (The U-Net is the tests' stand-in: no weights needed.)"""
    from support.fake_model import write_vhi_shim
    from xnat_emulator.synthetic_demo import write_synthetic_demo

    monkeypatch.setenv("VHI_TEST_BIN", str(write_vhi_shim(tmp_path / "bin")))
    demo = write_synthetic_demo(tmp_path / "cohort")
    sheet = tmp_path / "cohort" / "sheet.csv"
    sheet.write_text("site,subject,session,timepoint,stir,t1w,normal_marrow\n" + "".join(
        f"demo,{subject},{scan},pre,{demo}/stir/{scan}_STIR.nii.gz,{demo}/t1w/{scan}_T1W.nii.gz,\n"
        for scan, subject in (("1003", "09"), ("4386", "03"))))
    config = tmp_path / "cohort" / "config.yaml"
    config.write_text(yaml.safe_dump({"sites": [{"name": "demo", "reference": "auto", "source": {
        "type": "local", "root": str(tmp_path / "cohort"), "sheet": str(sheet),
        "outbox": str(tmp_path / "cohort" / "outbox")}}]}))
    run = tmp_path / "run"
    output = signal_when_segmenting(start(run, config), run, signal.SIGINT, again_after_s=0.05)
    assert "VHI still stopping: what finished goes to results/partial/" in output, output[-3000:]
    assert "RuntimeError" not in output and final_results_absent(run)
    states = {k: r["state"] for k, r in status_of(run, partial=True).items()}
    assert set(states) == {"1003", "4386"} and "failed" in states.values(), states
    rerun_finishes(run, config)
    assert {r["state"] for r in status_of(run).values()} == {"awaiting_cleaning"}


@workflow_case
def test_a_fixed_session_and_a_broken_sidecar_are_retried(clean_run: Path, tmp_path: Path) -> None:
    """A session whose T1W is missing fails alone (partial results say so); once the file
    is there the same command finishes it. A truncated vhi.json (disk trouble, a careless
    edit) fails the tables naming the file; removed, it is measured again."""
    gone = tmp_path / "cohort" / "late" / "1003_T1W.nii.gz"
    config = write_cohort(tmp_path / "cohort", extra_rows=[
        ["demo", "90", "late", "pre", "", str(gone), ""]])
    run = tmp_path / "run"
    first = snakemake(run, "--configfile", str(config))
    assert first.returncode != 0 and final_results_absent(run)
    status = status_of(run, partial=True)
    late = status["late"]
    assert late["state"] == "failed" and "1003_T1W.nii.gz: file not found" in late["reason"]
    assert {status[s]["state"] for s in SESSIONS} == {"measured"}
    page = (run / "results" / "partial" / "report.html").read_text()
    assert "Partial results" in page

    again = snakemake(run, "--configfile", str(config))  # not fixed yet: still failing, not "done"
    assert again.returncode != 0 and final_results_absent(run)

    gone.parent.mkdir(parents=True)
    shutil.copy(DATA / "t1w" / "1003_T1W.nii.gz", gone)
    rerun_finishes(run, config)
    assert status_of(run)["late"]["state"] == "segmented"
    pd.testing.assert_frame_equal(cohort_numbers(run), cohort_numbers(clean_run))

    vhi_json = run / "work" / "demo" / "14" / "1013" / "vhi.json"
    vhi_json.write_text(vhi_json.read_text()[:40])
    (run / "results" / "cohort_vhi.csv").unlink()  # the tables are rebuilt
    broken = snakemake(run, "--configfile", str(config))
    assert broken.returncode != 0 and final_results_absent(run)
    row = status_of(run, partial=True)["1013"]
    assert row["state"] == "failed" and f"{vhi_json.relative_to(run)}: not valid JSON" in row["reason"]
    vhi_json.unlink()
    rerun_finishes(run, config)
    pd.testing.assert_frame_equal(cohort_numbers(run), cohort_numbers(clean_run))


@workflow_case
def test_the_radiologists_file_in_the_outbox_is_never_replaced(clean_run: Path,
                                                               tmp_path: Path) -> None:
    config = write_cohort(tmp_path / "cohort", {"1003": "09"})
    run = tmp_path / "run"
    assert snakemake(run, "--configfile", str(config)).returncode == 0
    outbox = tmp_path / "cohort" / "outbox" / "demo" / "09" / "1003" / "proposal.nii.gz"
    # a radiologist saves their edit over the proposal in the outbox
    edited = np.asanyarray(nib.load(outbox).dataobj).copy()
    edited[edited == 2] = 0
    nib.save(nib.Nifti1Image(edited, nib.load(outbox).affine), outbox)
    theirs = outbox.read_bytes()
    # the proposal is made again (e.g. after a model change): the push refuses
    result = snakemake(run, "--configfile", str(config), "--forcerun", "propose_lesions")
    assert result.returncode != 0
    assert outbox.read_bytes() == theirs
    row = status_of(run, partial=True)["1003"]
    assert row["state"] == "failed" and row["step"] == "push_proposal"
    assert "changed since the platform wrote it" in row["reason"] and "kept" in row["reason"]
    # moved away as the message says, the next run pushes again and finishes
    outbox.rename(tmp_path / "radiologist_edit.nii.gz")
    rerun_finishes(run, config)


@workflow_case
def test_paths_with_spaces_quotes_and_shell_syntax(clean_run: Path, tmp_path: Path) -> None:
    """A cohort folder named like a hospital's share, and one that tries to run a command."""
    canary = tmp_path / "CANARY"
    root = tmp_path / "Hospital A" / f"St Mary's x$(touch {canary})"
    config = write_cohort(root, {"1003": "09"})
    run = tmp_path / "run dir"
    result = snakemake(run, "--configfile", str(config))
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    assert not canary.exists()
    agreement = pd.read_csv(run / "results" / "agreement.csv", dtype={"session": str})
    assert agreement["reader_file"].tolist() == [str(root / "readers" / "1003_R11.nii.gz")]
    ours = cohort_numbers(run)
    pd.testing.assert_frame_equal(ours, cohort_numbers(clean_run).loc[["1003"]])


@workflow_case
def test_a_dry_run_writes_nothing_a_running_run_reads(clean_run: Path, tmp_path: Path) -> None:
    """A run's jobs read its plan-<digest>.json; a dry run or lint of another sheet changes
    neither it nor the saved listing of the run's config (its own goes beside it)."""
    state = clean_run / "work" / ".vhi"
    before = {p.relative_to(state): p.read_bytes() for p in state.rglob("*.json")}
    assert len([p for p in before if p.name.startswith("plan-")]) == 1 and len(before) == 2
    other = write_cohort(tmp_path / "other", {"1013": "14"})
    for args in (["-n"], ["--lint"]):
        snakemake(clean_run, "--configfile", str(other), *args)
        after = {p.relative_to(state): p.read_bytes() for p in state.rglob("*.json")}
        assert {k: v for k, v in after.items() if k in before} == before
    assert len(after) == 3  # the other config's listing, saved by its dry run



# --------------------------------------------------------------------------- one file
def nifti(path: Path, data: np.ndarray, zooms=(1.0, 1.0, 1.0), *,
          affine: np.ndarray | None = None) -> Path:
    """An uncompressed NIfTI written byte by byte, so a header can say what nibabel would
    not let it: ``zooms`` go to pixdim, ``affine`` (default: diagonal of ``zooms``) to the
    sform; the qform is unset."""
    affine = np.diag([*np.nan_to_num(zooms, nan=1.0, posinf=1.0), 1.0]) if affine is None else affine
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(data.shape)
    hdr.set_data_dtype(data.dtype)
    hdr["vox_offset"] = 352
    hdr["pixdim"][1:4] = zooms
    hdr["sform_code"], hdr["qform_code"] = 1, 0
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = affine[0], affine[1], affine[2]
    path.write_bytes(hdr.binaryblock + b"\0" * 4 + data.tobytes(order="F"))
    return path


def mask_data() -> np.ndarray:
    data = np.zeros((10, 10, 4), np.uint8)
    data[2:5, 2:5, 1] = 1
    return data


def test_vhi_is_from_consistent_geometry_only(tmp_path: Path) -> None:
    good = nifti(tmp_path / "good.nii", mask_data(), zooms=(0.5, 0.5, 4.0))
    assert json.loads(vhi("measure", "--mask", str(good), "--json").stdout)["vhi_ml"] == (
        pytest.approx(9 * 0.5 * 0.5 * 4.0 / 1000))
    # the sform says 2 mm voxels, pixdim 1 mm: 8x the VHI if pixdim were trusted
    lying = nifti(tmp_path / "lying.nii", mask_data(), affine=np.diag([2.0, 2.0, 2.0, 1.0]))
    for zooms in ((0.0, 1.0, 1.0), (np.nan, 1.0, 1.0), (1e30, 1.0, 1.0)):
        with pytest.raises(InputError, match="voxel sizes"):
            load_mask(nifti(tmp_path / "z.nii", mask_data(), zooms=zooms))
    with pytest.raises(InputError, match="disagree with its affine"):
        load_mask(lying)
    nan_affine = np.diag([1.0, 1.0, 1.0, 1.0])
    nan_affine[0, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        load_mask(nifti(tmp_path / "nan.nii", mask_data(), affine=nan_affine))
    result = vhi("measure", "--mask", str(lying), "--out", str(tmp_path / "vhi.json"))
    assert result.returncode == EXIT_INPUT and "lying.nii" in result.stderr
    assert not (tmp_path / "vhi.json").exists()


def test_a_qform_only_mask_without_voxel_sizes_is_refused(tmp_path: Path) -> None:
    """pixdim 0 and no sform: nibabel sets the sizes to 1 mm as it loads the header, and the
    qform is built from them, so header and affine agree on a volume no scanner made
    (`vhi measure` gave 0.009 ml for these 9 voxels of 0.5 x 0.5 x 4 mm)."""
    img = nib.Nifti1Image(mask_data(), np.diag([0.5, 0.5, 4.0, 1.0]))
    img.set_qform(img.affine, 1)
    img.set_sform(None, 0)
    hdr = img.header
    hdr["pixdim"][1:4] = 0
    path = tmp_path / "qform_only.nii"
    path.write_bytes(hdr.binaryblock + b"\0" * 4 + mask_data().tobytes(order="F"))
    result = vhi("measure", "--mask", str(path), "--out", str(tmp_path / "vhi.json"))
    assert result.returncode == EXIT_INPUT
    assert (f"{path}: voxel sizes (pixdim) [0.0, 0.0, 0.0] mm in the header: a size of 0 is no "
            "size (nibabel would take 1 mm); fix the header") in result.stderr
    assert not (tmp_path / "vhi.json").exists()


def test_a_damaged_json_intermediate_is_named(tmp_path: Path) -> None:
    """A push receipt cut short (a full disk, a hand edit): `vhi collect` names the file and
    stops with the input status (it ended in a JSONDecodeError traceback naming no file)."""
    receipt = tmp_path / "pushed.json"
    receipt.write_text('{"collection": {"id": "XNAT_E0001_')
    session = Session("A", "A09", "1003_pre", "pre",
                      {"stir": "https://xnat.invalid/data/experiments/E1/scans/3"})
    source = {"type": "xnat", "server": "https://xnat.invalid", "project": "P", "retries": 0}
    proposal = nifti(tmp_path / "proposal.nii", mask_data())
    result = vhi("collect", "--source", json.dumps(source), "--session", json.dumps(session.to_dict()),
                 "--like", str(proposal), "--out", str(tmp_path / "cleaned.nii.gz"),
                 "--receipt", str(receipt))
    assert result.returncode == EXIT_INPUT, result.stderr
    assert f"{receipt}: not valid JSON" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "cleaned.nii.gz").exists()


def test_a_cleaned_path_that_is_a_folder_is_named(tmp_path: Path) -> None:
    """A folder where the cleaned mask belongs (a radiologist's export unpacked there): the
    collect fails naming it (it said "no cleaned segmentation on the source (yet)")."""
    session = Session("s1", "P0", "S0", "pre", {"stir": str(tmp_path / "stir.nii.gz")})
    folder = tmp_path / "cohort" / "cleaned" / "s1" / "P0" / "S0.nii.gz"
    folder.mkdir(parents=True)
    source = {"type": "local", "root": str(tmp_path / "cohort")}
    proposal = nifti(tmp_path / "proposal.nii", mask_data())
    result = vhi("collect", "--source", json.dumps(source), "--session", json.dumps(session.to_dict()),
                 "--like", str(proposal), "--out", str(tmp_path / "work" / "cleaned.nii.gz"))
    assert result.returncode == EXIT_INPUT
    assert (f"{folder}: session s1/P0/S0: the cleaned path is a folder (or not a regular file), "
            "not a cleaned mask") in result.stderr, result.stderr
    assert not list((tmp_path / "work").iterdir())


def test_masks_hold_non_negative_integer_labels(tmp_path: Path) -> None:
    probability = mask_data().astype(np.float32) * 0.3
    probability[5:9, 5:9, 2] = 0.02
    with pytest.raises(InputError, match=r"non-integer values .* a probability map"):
        load_mask(nifti(tmp_path / "p.nii", probability))
    negative = mask_data().astype(np.int16)
    negative[0, 0, 0] = -1
    with pytest.raises(InputError, match="negative values"):
        load_mask(nifti(tmp_path / "n.nii", negative))
    with pytest.raises(InputError, match="complex"):
        load_image(nifti(tmp_path / "c.nii", mask_data().astype(np.complex64)))


def test_a_header_claiming_gigabytes_is_refused_before_reading(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))
    img.header.set_data_shape((2048, 2048, 128))  # 2 GiB of float32 claimed, 1 kB on disk
    path = tmp_path / "claims.nii.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(img.header.binaryblock + b"\0" * 4 + np.zeros(8, np.float32).tobytes())
    assert path.stat().st_size < 2000
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=r"claims .* voxels, more than"):
            load_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20


def test_ids_are_whole_strings_of_bounded_length(tmp_path: Path) -> None:
    for bad in ("s1\n", "s1\nrm -rf x", "x" * 300, "-s1", "s 1"):
        with pytest.raises(ConfigError, match="not a valid id"):
            Session("demo", "01", bad, "pre")
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(f"subject,session,timepoint,t1w\n01,{'x' * 300},pre,a.nii.gz\n")
    with pytest.raises(ConfigError):
        read_sheet(sheet, "demo", tmp_path)


def test_a_duplicate_sheet_column_is_refused(tmp_path: Path) -> None:
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("subject,session,timepoint,t1w,t1w\n01,s1,pre,a.nii.gz,b.nii.gz\n")
    with pytest.raises(ConfigError, match="column 't1w' appears more than once"):
        read_sheet(sheet, "demo", tmp_path)


def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb = tmp_path / "config.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    assert bomb.stat().st_size < 1500
    started = time.monotonic()
    with pytest.raises(ConfigError, match="YAML aliases"):
        resolve_config(yaml.safe_load(bomb.read_text()))
    assert time.monotonic() - started < 10  # not a timing test: a hang would be hours


def test_environment_failures_name_the_file_and_exit_3(tmp_path: Path) -> None:
    mask = nifti(tmp_path / "mask.nii", mask_data())
    folder = tmp_path / "a folder"
    folder.mkdir()
    result = vhi("measure", "--mask", str(mask), "--out", str(folder))
    assert result.returncode == EXIT_ENVIRONMENT
    assert f"{folder}: is a folder" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 kB tmpfs, where the machine lets the tests mount one."""
    where = tmp_path / "small"
    where.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)],
                           capture_output=True, text=True, check=False)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mount.stderr.strip()})")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


def test_an_atomic_write_reaches_the_disk_before_and_after_its_rename(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is flushed (fsync) before it is renamed into place and its folder after:
    otherwise a power loss can leave an empty file under the final name (the rename reached
    the disk, the data did not) or no file at all."""
    from vhi.fileio import save_json

    events: list[tuple[str, str]] = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(fd: int) -> None:
        events.append(("fsync", str(Path(f"/proc/self/fd/{fd}").readlink())))
        fsync(fd)

    def recording_replace(src: str, dst: str) -> None:
        events.append(("rename", f"{Path(src).name} -> {Path(dst).name}"))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    dest = tmp_path / "out" / "vhi.json"
    save_json({"vhi_ml": 1.5}, dest)
    [(_, tmp), rename, folder] = events
    assert Path(tmp).parent == dest.parent and Path(tmp).name.startswith(".vhi.json.")
    assert rename == ("rename", f"{Path(tmp).name} -> vhi.json")
    assert folder == ("fsync", str(dest.parent))
    assert json.loads(dest.read_text()) == {"vhi_ml": 1.5}


def test_disk_full_names_the_file_and_leaves_nothing_half_written(full_disk: Path,
                                                                 tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = nifti(tmp_path / "noise.nii", rng.integers(0, 4, (64, 64, 64)).astype(np.uint8))
    dest = full_disk / "copy.nii.gz"
    # a copy that cannot fit (the image is ~200 kB compressed)
    result = vhi("measure", "--mask", str(image), "--out", str(full_disk / "vhi.json"))
    assert result.returncode == 0  # a small file still fits
    from vhi.fileio import copy_hashed

    with pytest.raises(OSError) as info:
        copy_hashed(image, dest)
    assert info.value.filename == str(dest) and "No space left" in str(info.value)
    assert not dest.exists() and half_written(full_disk) == []


def test_broken_inputs_never_reach_the_radiologist(tmp_path: Path) -> None:
    config = {"type": "local", "root": str(tmp_path), "sheet": str(tmp_path / "s.csv"),
              "outbox": str(tmp_path / "outbox"), "cleaned": "cleaned/{session}.nii.gz",
              "reader_masks": {}}
    session = Session("demo", "01", "s1", "pre", {"t1w": str(tmp_path / "t1w.nii.gz")})
    args = ["push", "--source", json.dumps(config), "--session", json.dumps(session.to_dict()),
            "--out", str(tmp_path / "pushed.json")]
    proposal = nifti(tmp_path / "proposal.nii", mask_data())
    sidecar = tmp_path / "proposal.json"
    sidecar.write_text("")  # empty: a crash of something that did not write atomically
    result = vhi(*args, "--proposal", str(proposal), "--sidecar", str(sidecar))
    assert result.returncode == EXIT_INPUT and "proposal.json: not valid JSON" in result.stderr
    sidecar.write_text(json.dumps({"lower": 1, "upper": 2, "thresholds": {}, "voxels": {},
                                   "proposal_ml": 0.1}))
    corrupt = tmp_path / "corrupt.nii"
    corrupt.write_bytes(proposal.read_bytes()[:60])
    result = vhi(*args, "--proposal", str(corrupt), "--sidecar", str(sidecar))
    assert result.returncode == EXIT_INPUT and "corrupt.nii" in result.stderr
    wrong = nifti(tmp_path / "wrong.nii", mask_data() * 7)
    result = vhi(*args, "--proposal", str(wrong), "--sidecar", str(sidecar))
    assert result.returncode == EXIT_INPUT and "labels [0, 7]" in result.stderr
    assert not (tmp_path / "outbox").exists() and not (tmp_path / "pushed.json").exists()
    assert vhi(*args, "--proposal", str(proposal), "--sidecar", str(sidecar)).returncode == 0
    assert (tmp_path / "outbox" / "demo" / "01" / "s1" / "proposal.nii").is_file()


def test_a_zip_member_is_streamed_never_inflated_whole(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A 0.2 MB zip inflating to 200 MB: unpacked in blocks (memory stays flat); a member
    declaring more than a DICOM file may have is refused before anything is inflated."""
    import hashlib
    import zipfile

    from vhi.sources.xnat import transfer
    from vhi.sources.xnat.client import XnatError

    big = b"\0" * (200 << 20)
    archive = tmp_path / "scan.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("E1/scans/1/resources/DICOM/files/1.dcm", big)
    listing = {"1.dcm": (len(big), hashlib.md5(big).hexdigest())}  # noqa: S324
    del big
    assert archive.stat().st_size < 1 << 20
    out = tmp_path / "out"
    out.mkdir()
    tracemalloc.start()
    try:
        info = transfer.unpack_checked(archive, listing, out)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20
    assert info["files"] == 1 and (out / "00000_1.dcm").stat().st_size == 200 << 20
    monkeypatch.setattr(transfer, "MAX_MEMBER_BYTES", 1 << 20)
    with pytest.raises(XnatError, match="declares 209,715,200 bytes"):
        transfer.unpack_checked(archive, listing, out)
