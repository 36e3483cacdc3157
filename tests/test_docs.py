"""The docs cannot drift from the code: the config reference in docs/usage.md is generated
from the package's JSON Schemas (scripts/config_reference.py, `make docs`), every default
the prose states is the schema's, every config example is a valid config, and every
file of the project the docs name exists."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from vhi.config.load import resolve_config
from vhi.config.schema import CONFIG_SCHEMA, load_schema

from support.paths import PROJECT_ROOT

USAGE = PROJECT_ROOT / "docs" / "usage.md"
DOCS = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md")),
        PROJECT_ROOT / "containers" / "README.md", PROJECT_ROOT / "config.yaml",
        PROJECT_ROOT / "Snakefile"]
GENERATED = re.compile(r"<!-- BEGIN config-reference: (\w+) -->.*?<!-- END config-reference: \1 -->", re.S)
#: "`model.device` is `auto` by default", "`retries` (default `3`)"
STATED_DEFAULT = re.compile(r"`(?P<key>[a-z_][a-z_.\[\]]*)`(?: is|,)? \(?(?:default:? )?"
                            r"`(?P<value>[^`]+)`(?P<by> by default|\))")
PROJECT_PATH = re.compile(r"(?<![\w/.-])(?:src|workflow|scripts|profiles|containers|tests|benchmarks|docs"
                          r"|envs)/[A-Za-z0-9_./*-]*[A-Za-z0-9_*]")


def schema_defaults() -> dict[str, set[str]]:
    """Key (its last name, and its dotted path from the root) -> the defaults the schema
    gives it anywhere, as YAML would write them."""
    found: dict[str, set[str]] = {}

    def walk(node: object, path: str) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, path)
        if not isinstance(node, dict):
            return
        for name, sub in (node.get("properties") or {}).items():
            if isinstance(sub, dict) and "default" in sub:
                text = yaml.safe_dump(sub["default"], default_flow_style=True).strip()
                for key in (name, f"{path}{name}"):
                    found.setdefault(key, set()).add(text.removesuffix("...").strip().strip("'"))
            walk(sub, f"{path}{name}.")
        for key, value in node.items():
            if key != "properties":  # $defs (each a root of its own), allOf, items, ...
                walk(value, "" if key == "$defs" else path)

    walk(load_schema(CONFIG_SCHEMA), "")
    return found


def test_config_reference_is_generated_from_the_schema() -> None:
    check = subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "config_reference.py"),
                            "--check"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, f"{check.stderr}\n{check.stdout[-5000:]}"
    names = GENERATED.findall(USAGE.read_text())
    assert {"config", "sheet", "local_source", "xnat_source", "dicomweb_source"} <= set(names)


def test_defaults_stated_in_the_prose_are_the_schemas() -> None:
    prose = GENERATED.sub("", USAGE.read_text())
    defaults = schema_defaults()
    stated = [(m["key"], m["value"]) for m in STATED_DEFAULT.finditer(prose) if m["key"] in defaults]
    assert ("model.device", "auto") in stated  # the check sees the sentence the issue named
    wrong = [(key, value, sorted(defaults[key])) for key, value in stated if value not in defaults[key]]
    assert not wrong, f"docs/usage.md states defaults the schema does not give: {wrong}"


def yaml_examples(text: str) -> list[dict]:
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    return [doc for doc in map(yaml.safe_load, blocks) if isinstance(doc, dict) and "sites" in doc]


@pytest.mark.parametrize("example", yaml_examples(USAGE.read_text()),
                         ids=lambda e: e["sites"][0]["source"]["type"])
def test_config_examples_in_the_docs_are_valid(example: dict) -> None:
    resolve_config(example)


def test_project_files_the_docs_name_exist() -> None:
    missing = sorted({(doc.relative_to(PROJECT_ROOT).as_posix(), path)
                      for doc in DOCS for path in PROJECT_PATH.findall(doc.read_text())
                      if not list(PROJECT_ROOT.glob(path.rstrip(".")))})
    assert not missing, f"files named in the docs that the project does not have: {missing}"
