"""The package's declared dependencies are what it imports.

Every module that ``src/vhi`` imports (at the top of a file or lazily inside a function)
is either the standard library, ``vhi`` itself, or comes from a distribution declared in
``pyproject.toml``; every declared distribution is imported, or is named in
:data:`RUNTIME_ONLY` with the reason it is needed. ``requirements.txt`` (the venv and
the image) pins each declared distribution at the same version. tests/test_install.py
then proves the declaration by a fresh install of the wheel.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

from support.imports import imported_modules, normalise, pins, third_party
from support.paths import PROJECT_ROOT

SRC = PROJECT_ROOT / "src" / "vhi"
#: Declared distributions that no module imports, and why the package needs them.
RUNTIME_ONLY = {
    "pyarrow": "pandas' parquet engine (results/cohort_vhi.parquet, vhi.results.tables)",
    "itsdangerous": "starlette's SessionMiddleware: the station's signed cookie (vhi.viewer.app)",
    "python-multipart": "starlette's request.form(): the station's sign-in form (vhi.viewer.app)",
}


def declared() -> dict[str, str]:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    return pins(project["dependencies"])


def distributions_of(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    """Distribution (normalised) -> the modules of it that are imported, through the
    installed environment's map of import names to distributions."""
    owners = importlib.metadata.packages_distributions()
    unknown = sorted(m for m in modules if m not in owners)
    assert not unknown, (f"imported but installed by no distribution here: {unknown} "
                         f"({ {m: sorted(modules[m]) for m in unknown} })")
    dists: dict[str, set[str]] = {}
    for module in modules:
        # a namespace shared by several distributions (rare) counts for each of them
        for dist in owners[module]:
            dists.setdefault(normalise(dist), set()).add(module)
    return dists


def test_the_import_scan_sees_lazy_imports(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(
        "import os, numpy.linalg as la\nfrom yaml import safe_load\nfrom . import sibling\n"
        "def f():\n    import torch\n    from PIL import Image\n")
    assert set(third_party(imported_modules(tmp_path / "pkg"))) == {"numpy", "yaml", "torch", "PIL"}


def test_every_imported_distribution_is_declared_and_every_declared_one_is_used() -> None:
    modules = third_party(imported_modules(SRC))
    used = distributions_of(modules)
    wanted = declared()
    missing = {dist: sorted(mods) for dist, mods in used.items() if dist not in wanted}
    assert not missing, (f"imported by src/vhi but not in pyproject.toml's dependencies: {missing} "
                         f"(files: { {m: sorted(modules[m]) for ms in missing.values() for m in ms} })")
    unused = sorted(set(wanted) - set(used) - set(RUNTIME_ONLY))
    assert not unused, f"declared in pyproject.toml but imported nowhere under src/vhi: {unused}"
    stale = sorted(set(RUNTIME_ONLY) - set(wanted))
    assert not stale, f"RUNTIME_ONLY names distributions pyproject.toml does not declare: {stale}"
    assert all("==" in spec for spec in wanted.values()), wanted  # pinned, like requirements.txt


def test_requirements_pin_what_the_package_declares() -> None:
    """The venv (`make setup`) and the image install requirements.txt: the same versions."""
    requirements = pins((PROJECT_ROOT / "requirements.txt").read_text().splitlines())
    differ = {name: (spec, requirements.get(name)) for name, spec in declared().items()
              if requirements.get(name, "").lower() != spec.lower()}
    assert not differ, f"pyproject.toml vs requirements.txt: {differ}"
