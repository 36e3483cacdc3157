"""Shared fixtures. The public data is found through VHI_SHARED (default ../shared)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from support.browser import needs_browser
from support.data import needs_models
from support.env import OVERSUBSCRIBED_ENV
from support.orthanc import needs_orthanc
from support.paths import DATA, SHARED

if TYPE_CHECKING:
    from support.demo import DemoRun
    from support.results import SyntheticCohort

for _name, _value in OVERSUBSCRIBED_ENV.items():  # before any test module imports torch
    os.environ.setdefault(_name, _value)

#: The tiers a test's needs put it in (the markers registered in pyproject.toml; `make
#: test-fast` runs the tests in none of them): the skip conditions of support/ it carries,
#: and the fixtures it uses. Tiers with no such sign (slurm, container, install, slow)
#: are marked in the test modules.
TIER_OF_SKIP = [(needs_models.mark, "real_model"), (needs_orthanc.mark, "orthanc"),
                (needs_browser.mark, "browser")]
TIER_OF_FIXTURE = {"demo_run": "real_model", "slurm_cluster": "slurm"}


#: Seconds each long module took in `make test` on the 2-core machine (three workers): under
#: pytest-xdist the longest start first (the shared demo run's readers as one, their sum).
#: test_image's is its image build after a change to the package (as on CI), which so runs
#: beside the demo run, not after it in test_image_demo. Only the order depends on these; a
#: module not listed counts LONG_TEST_S per long-tier test.
MODULE_SECONDS = {
    "test_slurm.py": 430, "test_faults.py": 300, "test_workflow_xnat.py": 300,
    "test_model.py": 180, "test_workflow.py": 30, "test_image_demo.py": 50, "test_report_browser.py": 10,
    "test_readers_browser.py": 160, "test_sources_xnat.py": 120, "test_plan.py": 110,
    "test_ohif_versions.py": 100, "test_sources_dicomweb.py": 100, "test_viewer_local.py": 100,
    "test_viewer_loop.py": 80, "test_workflow_dicomweb.py": 40, "test_noroot.py": 40,
    "test_install.py": 35, "test_segment_worker.py": 25, "test_dicom_io.py": 20, "test_image.py": 250,
    "test_workflow_dryrun.py": 20, "test_cli.py": 12, "test_reference.py": 10,
    "test_stale_cleaning.py": 10, "test_station_readers.py": 10, "test_viewer.py": 8,
    "test_readers_results.py": 6, "test_series.py": 4, "test_station_security.py": 4,
}
#: The tiers of tests that take tens of seconds or minutes (a server, a browser, the U-Net, a
#: whole workflow run), and what one counts for in a module MODULE_SECONDS does not list.
LONG_TIERS = {"slow", "real_model", "slurm", "container", "browser", "orthanc", "install", "noroot"}
LONG_TEST_S = 30


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        skips = list(item.iter_markers("skipif"))
        tiers = {tier for sign, tier in TIER_OF_SKIP if sign in skips}
        tiers |= {tier for name, tier in TIER_OF_FIXTURE.items()
                  if name in getattr(item, "fixturenames", ())}
        for tier in sorted(tiers - {mark.name for mark in item.iter_markers()}):
            item.add_marker(tier)
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: the longest modules first
        items[:] = sorted(items, key=module_order(items))


def module_order(items: list[pytest.Item]):
    """Sort key of a test: the longest module first (MODULE_SECONDS, the shared demo run's
    readers as one), in its module the file's order."""
    def module(item: pytest.Item) -> str:
        return module_of(item.nodeid)

    readers, estimate = demo_run_modules(), Counter()
    for item in items:
        estimate[module(item)] += LONG_TEST_S * bool(LONG_TIERS & {m.name for m in item.iter_markers()})
    seconds = {name: MODULE_SECONDS.get(Path(name).name, estimate[name]) for name in estimate}
    demo_group = sum(seconds[name] for name in readers if name in seconds)
    weight = {name: demo_group if name in readers else s for name, s in seconds.items()}
    position = {item.nodeid: index for index, item in enumerate(items)}
    return lambda item: (-weight[module(item)], module(item) not in readers, position[item.nodeid])


def module_of(nodeid: str) -> str:
    """The test module a node id is in, as node ids begin (tests/test_x.py)."""
    return nodeid.split("::", 1)[0]


def demo_run_modules() -> set[str]:
    """The test modules (as node ids begin) that read the shared demo run."""
    here = Path(__file__).parent
    return {f"{here.name}/{p.name}" for p in here.glob("test_*.py") if "demo_run" in p.read_text()}


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """`make test` runs pytest-xdist workers with --dist loadfile: each test module in
    one worker (its module fixtures made once), and every module that reads the shared
    demo run in the same one (the run made once), in the workers' order (longest first)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    readers = demo_run_modules()

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = module_of(nodeid)
            return "demo_run" if module in readers else module

        def _reschedule(self, node) -> None:
            # The next module only when the worker is down to its last test (which it runs
            # once it knows what follows), not at two as xdist does: a long module is not
            # queued behind another worker's minutes-long last tests.
            if node.shutting_down:
                return
            if not self.workqueue:
                node.shutdown()
            elif self._pending_of(self.assigned_work[node]) <= 1:
                self._assign_work_unit(node)

    config.option.loadscopereorder = False
    return ModuleScheduling(config, log)


#: What the session fixture `shared_folder` sets for the whole session (restored at its end).
SESSION_ENV = {"VHI_SHARED": str(SHARED)}
#: Not compared by `environment_unchanged`: the session's own settings, and what pytest
#: itself sets for each phase of a test.
NOT_COMPARED = {*SESSION_ENV, "PYTEST_CURRENT_TEST"}


@pytest.fixture(scope="session", autouse=True)
def shared_folder() -> Iterator[Path]:
    """The package finds the shared folder through VHI_SHARED; the tests set it for their
    session (and restore the environment after) so the package sees what they see."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in SESSION_ENV.items():
            mp.setenv(name, value)
        yield SHARED


@pytest.fixture(autouse=True)
def environment_unchanged() -> Iterator[None]:
    """Every test leaves os.environ as it found it (monkeypatch's changes are undone first:
    this fixture is set up before, so torn down after, the test's own fixtures)."""
    before = {k: v for k, v in os.environ.items() if k not in NOT_COMPARED}
    yield
    after = {k: v for k, v in os.environ.items() if k not in NOT_COMPARED}
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        pytest.fail(f"the test left os.environ changed: {', '.join(changed)} "
                    "(use monkeypatch; support.env.unset_env for a variable the code sets)",
                    pytrace=False)


@pytest.fixture(scope="session")
def stand_in_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the `vhi` of support.fake_model (the box model for the U-Net)."""
    from support.fake_model import write_vhi_shim

    return write_vhi_shim(tmp_path_factory.mktemp("stand_in_bin"))


@pytest.fixture
def stand_in_model(stand_in_bin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test's workflow runs (support.workflow) segment with the stand-in model: for
    tests where the U-Net's output is not the point."""
    monkeypatch.setenv("VHI_TEST_BIN", str(stand_in_bin))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "stir").is_dir():
        pytest.skip(f"public bone-MRI data not found at {DATA} (set VHI_SHARED to the shared folder)")
    return DATA


@pytest.fixture(scope="session")
def synthetic_cohort(tmp_path_factory: pytest.TempPathFactory) -> SyntheticCohort:
    """Five tiny sessions taken through the real per-session steps (read only for tests)."""
    from support.results import build_synthetic_cohort  # the package's steps: only when used

    return build_synthetic_cohort(tmp_path_factory.mktemp("synthetic_cohort"))


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> DemoRun:
    """The workflow run end to end on the demo cohort and a two-timepoint follow-up site
    (support/demo.py); once per test session, on the CPU (a few minutes)."""
    from support.demo import WEIGHTS, run_demo

    if not WEIGHTS.is_file():
        pytest.skip(f"published U-Net weights not found at {WEIGHTS}")
    run = run_demo(tmp_path_factory.mktemp("demo_run"), data_dir)
    assert run.result.returncode == 0, run.result.stderr[-5000:]
    return run
