"""Loading and validating the workflow configuration and the session sheet.

Both are validated against the JSON Schemas in ``workflow/schemas/`` (every key has a
``description``; ``additionalProperties: false`` makes a typo an error that names the
key). Defaults come from the schema. Paths may use ``${VHI_SHARED}``, replaced by the
config's ``shared`` key, else the ``VHI_SHARED`` environment variable, else
``../shared``; no other variable is expanded, so nothing secret leaks into a config.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from vhi.errors import VhiError
from vhi.settings import PROJECT_ROOT, shared_dir

SCHEMA_DIR = PROJECT_ROOT / "workflow" / "schemas"
CONFIG_SCHEMA = SCHEMA_DIR / "config.schema.yaml"
SHEET_SCHEMA = SCHEMA_DIR / "sheet.schema.yaml"
SHARED_VARS = ("${VHI_SHARED}", "$VHI_SHARED")
REFERENCE_MODES = ("auto", "manual", "manual_if_present")


class ConfigError(VhiError):
    """The config or a session sheet is invalid; the message names the key, row or session."""

    def __init__(self, where: object, cause: str) -> None:
        self.where = str(where)
        self.cause = cause
        super().__init__(f"{self.where}: {cause}")


@cache
def load_schema(path: Path) -> dict[str, Any]:
    with Path(path).open() as fh:
        return yaml.safe_load(fh)


def _with_defaults(validator_class: type) -> type:
    """A validator that fills in the schema's ``default`` values while validating."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: Any, instance: Any, schema: Any) -> Any:
        if validator.is_type(instance, "object"):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    default = sub["default"]
                    instance[name] = (dict(default) if isinstance(default, dict)
                                      else list(default) if isinstance(default, list) else default)
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def _where(error: jsonschema.ValidationError, root: str) -> str:
    parts = [root]
    for part in error.absolute_path:
        parts.append(f"[{part}]" if isinstance(part, int) else f".{part}")
    return "".join(parts)


def validate(instance: dict[str, Any], schema_path: Path, what: str) -> dict[str, Any]:
    """Validate ``instance`` in place (defaults filled in); the first error names the key."""
    schema = load_schema(schema_path)
    errors = list(_Validator(schema).iter_errors(instance))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        raise ConfigError(_where(error, what), error.message)
    return instance


def expand_shared(value: str, shared: Path) -> str:
    """Replace ``${VHI_SHARED}`` (or ``$VHI_SHARED``) and a leading ``~``."""
    for var in SHARED_VARS:
        value = value.replace(var, str(shared))
    return str(Path(value).expanduser()) if value.startswith("~") else value


@dataclass(frozen=True)
class SiteConfig:
    """One site: its name, reference mode and the (expanded) spec of its source."""

    name: str
    reference: str
    source: dict[str, Any]


@dataclass(frozen=True)
class Settings:
    """The validated configuration with paths expanded."""

    shared: Path
    work_dir: str
    results_dir: str
    logs_dir: str
    bundle: str
    device: str
    timepoints: tuple[str, ...]
    sites: tuple[SiteConfig, ...]
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def digest(self) -> str:
        """sha256 of the validated config (defaults filled in): the provenance of a run."""
        text = json.dumps(self.raw, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def site(self, name: str) -> SiteConfig:
        for site in self.sites:
            if site.name == name:
                return site
        raise ConfigError(f"site {name}", "not in the config")


def _expand_tree(value: Any, shared: Path) -> Any:
    if isinstance(value, str):
        return expand_shared(value, shared)
    if isinstance(value, Mapping):
        return {k: _expand_tree(v, shared) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_tree(v, shared) for v in value]
    return value


def resolve_config(config: Mapping[str, Any]) -> Settings:
    """Validate a config mapping (a copy; defaults filled in) and expand its paths."""
    data = validate(_plain(config), CONFIG_SCHEMA, "config")
    shared = Path(data["shared"]).expanduser().resolve() if data["shared"] else shared_dir()
    names = [site["name"] for site in data["sites"]]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError("config.sites", f"site {duplicates[0]} is defined twice")
    sites = tuple(
        SiteConfig(name=site["name"], reference=site["reference"],
                   source=_expand_tree(site["source"], shared))
        for site in data["sites"]
    )
    return Settings(
        shared=shared,
        work_dir=expand_shared(data["work_dir"], shared),
        results_dir=expand_shared(data["results_dir"], shared),
        logs_dir=expand_shared(data["logs_dir"], shared),
        bundle=data["model"]["bundle"],
        device=data["model"]["device"],
        timepoints=tuple(data["timepoints"]),
        sites=sites,
        raw=data,
    )


def _plain(value: Any) -> Any:
    """A deep, plain-dict copy (Snakemake's config is a dict subclass)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def load_config_file(path: str | os.PathLike[str]) -> Settings:
    """Read a YAML config file and resolve it."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(path, f"cannot read the config ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(path, "the config is not a mapping")
    return resolve_config(data)
