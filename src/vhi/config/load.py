"""Loading the workflow configuration: validated, defaults filled in, paths expanded.

The config is validated against the JSON Schema shipped in the package
(:mod:`vhi.config.schema`), which also fills in the defaults. Paths may use
``${VHI_SHARED}``, replaced by the config's ``shared`` key, else the ``VHI_SHARED``
environment variable, else ``../shared``; no other variable is expanded, so nothing
secret leaks into a config.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vhi.config.schema import CONFIG_SCHEMA, validate
from vhi.errors import ConfigError
from vhi.settings import shared_dir

SHARED_VARS = ("${VHI_SHARED}", "$VHI_SHARED")


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
    viewer_url: str = "http://127.0.0.1:8000"
    image: str = ""
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
        viewer_url=data["viewer_url"],
        image=expand_shared(data["image"], shared),
        raw=data,
    )


#: A config holds a few hundred values; YAML aliases can make a 1 kB file expand to
#: billions (an "alias bomb"), so the copy stops at this many.
MAX_CONFIG_VALUES = 100_000


def _plain(value: Any, budget: list[int] | None = None) -> Any:
    """A deep, plain-dict copy (Snakemake's config is a dict subclass), refused beyond
    :data:`MAX_CONFIG_VALUES` values."""
    budget = [MAX_CONFIG_VALUES] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0:
        raise ConfigError("config", f"more than {MAX_CONFIG_VALUES:,} values (YAML aliases "
                                    "expanding without end?)")
    if isinstance(value, Mapping):
        return {str(k): _plain(v, budget) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, budget) for v in value]
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
