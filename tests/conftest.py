"""Shared fixtures. The public data is found through VHI_SHARED (default ../shared)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from support.browser import needs_browser
from support.data import needs_models
from support.orthanc import needs_orthanc
from support.paths import DATA, SHARED

if TYPE_CHECKING:
    from support.demo import DemoRun
    from support.results import SyntheticCohort

#: The tiers a test's needs put it in (the markers registered in pyproject.toml; `make
#: test-fast` runs the tests in none of them): the skip conditions of support/ it carries,
#: and the fixtures it uses. Tiers with no such sign (slurm, container, install, slow)
#: are marked in the test modules.
TIER_OF_SKIP = [(needs_models.mark, "real_model"), (needs_orthanc.mark, "orthanc"),
                (needs_browser.mark, "browser")]
TIER_OF_FIXTURE = {"demo_run": "real_model", "slurm_cluster": "slurm"}


#: Tiers whose modules take minutes: under pytest-xdist they start first.
LONG_TIERS = {"slow", "slurm", "container", "browser"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        skips = list(item.iter_markers("skipif"))
        tiers = {tier for sign, tier in TIER_OF_SKIP if sign in skips}
        tiers |= {tier for name, tier in TIER_OF_FIXTURE.items()
                  if name in getattr(item, "fixturenames", ())}
        for tier in sorted(tiers - {mark.name for mark in item.iter_markers()}):
            item.add_marker(tier)
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: the longest modules first
        # the shared demo run's readers, then the cluster's (minutes of waiting on the
        # executor's status checks, little CPU), then the other long tiers, then the rest
        readers, rank = demo_run_modules(), {}
        for item in items:
            module, marks = item.nodeid.split("::", 1)[0], {mark.name for mark in item.iter_markers()}
            mine = 0 if module in readers else 1 if "slurm" in marks else 2 if LONG_TIERS & marks else 3
            rank[module] = min(rank.get(module, 3), mine)
        first = {i: rank[m] for i, m in enumerate(item.nodeid.split("::", 1)[0] for item in items)}
        items[:] = [item for _, item in sorted(enumerate(items), key=lambda e: (first[e[0]], e[0]))]


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
            module = nodeid.split("::", 1)[0]
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
