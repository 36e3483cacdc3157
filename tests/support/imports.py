"""What a package imports, read from its source with ``ast`` (lazy imports inside
functions too), and requirement pins by distribution name."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    return normalise(re.split(r"[\s;\[<>=!~]", spec, maxsplit=1)[0])


def pins(lines: list[str]) -> dict[str, str]:
    """name -> the whole pin, of requirement lines (comments and blanks skipped)."""
    specs = [line.split("#", 1)[0].strip() for line in lines]
    return {requirement_name(s): s.replace(" ", "") for s in specs if s}


def imported_modules(folder: Path) -> dict[str, set[str]]:
    """Top-level module name -> the files that import it (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(folder.parent)))
    return found


def third_party(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    return {m: files for m, files in modules.items()
            if m not in sys.stdlib_module_names and m != "vhi"}
