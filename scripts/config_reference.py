"""The configuration reference in docs/usage.md, generated from the package's JSON Schemas.

    python scripts/config_reference.py            rewrite the generated tables (`make docs`)
    python scripts/config_reference.py --check    exit 1, with a diff, when they differ

Each table sits between two markers in the document, naming a part of a schema:

    <!-- BEGIN config-reference: xnat_source -->
    ...
    <!-- END config-reference: xnat_source -->

``config`` is the root of config.schema.yaml, ``sheet`` the session sheet's schema, any
other name a ``$defs`` entry of config.schema.yaml. Keys, defaults, allowed values and
meanings all come from the schema (its ``description``s), so the docs cannot state a
default the code does not use.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from vhi.config.schema import CONFIG_SCHEMA, SHEET_SCHEMA, load_schema

DOC = Path(__file__).resolve().parents[1] / "docs" / "usage.md"
BLOCK = re.compile(r"(<!-- BEGIN config-reference: (?P<name>\w+) -->\n)(?P<body>.*?)"
                   r"(<!-- END config-reference: (?P=name) -->)", re.S)
NOTE = "<!-- generated from src/vhi/config/schemas/ by `make docs`; edit the schema, not this table -->"


def code(text: str) -> str:
    return f"`{text}`".replace("|", "\\|")


def value(v: Any) -> str:
    """A value as it would be written in the YAML config."""
    text = yaml.safe_dump(v, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("...").strip()


def prose(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A node with its ``$ref`` followed (the node's own keys, e.g. its description, win)."""
    if "$ref" not in node:
        return node
    target = resolve(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def meaning(node: dict[str, Any]) -> str:
    text = prose(node.get("description", ""))
    if "const" in node:
        text += f" Value: {code(value(node['const']))}."
    allowed = node.get("enum") or node.get("items", {}).get("enum")
    if allowed:
        text += " Values: " + ", ".join(code(value(a)) for a in allowed) + "."
    return text


def opened(node: dict[str, Any]) -> bool:
    """An object written in place whose keys are plain values: its keys get rows."""
    return (node.get("additionalProperties") is False and bool(node.get("properties"))
            and not any("$ref" in sub for sub in node["properties"].values()))


def rows(node: dict[str, Any], defs: dict[str, Any], prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, meaning) for every key under ``node``. An object written in place
    and a list of objects are opened (``model.device``, ``sites[].name``); one that
    refers to other definitions (a source, the scan rules) is one row: they have their
    own tables."""
    out = []
    required = set(node.get("required", []))
    for name, written in node.get("properties", {}).items():
        sub = resolve(written, defs)
        key = f"{prefix}{name}"
        items = resolve(sub.get("items", {}), defs)
        if opened(written):  # e.g. model: its keys here
            out += rows(sub, defs, f"{key}.")
        elif sub.get("type") == "array" and items.get("properties"):  # sites: each item's keys
            out += rows(items, defs, f"{key}[].")
        else:
            default = ("required" if name in required
                       else code(value(sub["default"])) if "default" in sub else "—")
            out.append((code(key), default, meaning(sub)))
    return out


def render(name: str) -> str:
    if name == "sheet":
        schema = load_schema(SHEET_SCHEMA)
        required = set(schema["required"])
        lines = ["| column | cell | meaning |", "| --- | --- | --- |"]
        lines += [f"| {code(col)} | {'required' if col in required else 'may be empty'} | {meaning(sub)} |"
                  for col, sub in schema["properties"].items()]
    else:
        schema = load_schema(CONFIG_SCHEMA)
        defs = schema["$defs"]
        node = schema if name == "config" else defs[name]
        lines = ["| key | default | meaning |", "| --- | --- | --- |"]
        lines += [f"| {key} | {default} | {text} |" for key, default, text in rows(node, defs)]
    return "\n".join([NOTE, *lines]) + "\n"


def generate(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("name")) + m.group(4), text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when they differ")
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args()
    text = args.doc.read_text()
    if not BLOCK.search(text):
        print(f"{args.doc}: no '<!-- BEGIN config-reference: NAME -->' block", file=sys.stderr)
        return 1
    new = generate(text)
    if args.check:
        if new != text:
            sys.stdout.writelines(difflib.unified_diff(
                text.splitlines(True), new.splitlines(True), str(args.doc), "generated from the schema"))
            print(f"{args.doc}: the config reference differs from the schema: run `make docs`",
                  file=sys.stderr)
            return 1
        return 0
    if new != text:
        args.doc.write_text(new)
        print(f"{args.doc}: config reference regenerated", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
