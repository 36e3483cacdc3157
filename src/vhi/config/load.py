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
    """One site: its name, reference mode, the (expanded) spec of its source, and how its
    sessions are read (double-read fraction, days to clean, whose mask gives the VHI)."""

    name: str
    reference: str
    source: dict[str, Any]
    double_read: float
    due_days: int
    double_read_vhi: str  # "first" or "second": the reader whose mask gives a double read's VHI


@dataclass(frozen=True)
class ReaderConfig:
    """A radiologist who cleans proposals, and the sites they read."""

    id: str
    name: str
    sites: tuple[str, ...]

    @property
    def display_name(self) -> str:
        return self.name or self.id


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
    plan: str = "list"  # list | saved: where a workflow run gets its cohort plan
    unreachable_sites: str = "fail"  # fail | saved: a site whose server cannot be reached
    readers: tuple[ReaderConfig, ...] = ()
    image: str = ""
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def digest(self) -> str:
        """sha256 of the validated config (defaults filled in): the provenance of a run."""
        text = json.dumps(self.raw, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def sites_digest(self) -> str:
        """sha256 (16 hex digits) of the sites as configured (defaults filled in, paths as
        written): what a cohort plan depends on, so a plan is read only by a config that
        plans the same sites."""
        text = json.dumps(self.raw.get("sites", []), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def site(self, name: str) -> SiteConfig:
        for site in self.sites:
            if site.name == name:
                return site
        raise ConfigError(f"site {name}", "not in the config")

    def reader(self, reader_id: str) -> ReaderConfig:
        for reader in self.readers:
            if reader.id == reader_id:
                return reader
        known = ", ".join(r.id for r in self.readers) or "none"
        raise ConfigError(f"reader {reader_id}", f"not in the config's readers (known: {known})")

    def readers_of(self, site: str) -> tuple[str, ...]:
        """The ids of the readers of ``site``, in the config's order."""
        return tuple(r.id for r in self.readers if site in r.sites)


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
    data = _plain(config)
    refuse_renamed_keys(data)
    data = validate(data, CONFIG_SCHEMA, "config")
    shared = Path(data["shared"]).expanduser().resolve() if data["shared"] else shared_dir()
    names = [site["name"] for site in data["sites"]]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError("config.sites", f"site {duplicates[0]} is defined twice")
    sites = tuple(
        SiteConfig(name=site["name"], reference=site["reference"],
                   source=_expand_tree(site["source"], shared), double_read=float(site["double_read"]),
                   due_days=int(site["due_days"]), double_read_vhi=site["double_read_vhi"])
        for site in data["sites"]
    )
    readers = _readers(data["readers"], sites)
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
        plan=data["plan"],
        unreachable_sites=data["unreachable_sites"],
        readers=readers,
        image=expand_shared(data["image"], shared),
        raw=data,
    )


def refuse_renamed_keys(data: Mapping[str, Any]) -> None:
    """A config written before a key was renamed is refused with what to rename (the
    schema alone would only call the old key unexpected)."""
    for index, site in enumerate(data.get("sites") or []):
        source = site.get("source") if isinstance(site, Mapping) else None
        if isinstance(source, Mapping) and "readers" in source:
            where = f"config.sites[{index}].source.readers"
            raise ConfigError(where, f"renamed: call it sites[{index}].source.reader_masks (the "
                                     "independent reader masks compared with the proposal in "
                                     "agreement.csv); the top-level `readers:` now lists the "
                                     "radiologists who clean the proposals")


def _readers(entries: list[dict[str, Any]], sites: tuple[SiteConfig, ...]) -> tuple[ReaderConfig, ...]:
    """The readers, checked against the sites: every site a reader reads exists, no id twice,
    and a site that double-reads has two readers."""
    names = [site.name for site in sites]
    readers = []
    for index, entry in enumerate(entries):
        where = f"config.readers[{index}]"
        if any(r.id == entry["id"] for r in readers):
            raise ConfigError(where, f"reader {entry['id']} is defined twice")
        unknown = [s for s in entry["sites"] if s not in names]
        if unknown:
            raise ConfigError(f"{where}.sites", f"reader {entry['id']} reads site {unknown[0]}, "
                                                f"which is not in sites (sites: {', '.join(names)})")
        readers.append(ReaderConfig(id=entry["id"], name=entry["name"], sites=tuple(entry["sites"])))
    for index, site in enumerate(sites):
        count = sum(site.name in r.sites for r in readers)
        if site.double_read > 0 and count < 2:
            raise ConfigError(f"config.sites[{index}].double_read",
                              f"site {site.name} double-reads {site.double_read:g} of its sessions "
                              f"but has {count} reader(s): list at least two readers with "
                              f"{site.name} in their sites, or set double_read: 0")
    return tuple(readers)


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
