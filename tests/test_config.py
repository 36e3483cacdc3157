"""Config validation: defaults, ${VHI_SHARED} expansion, unknown keys named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vhi import __version__
from vhi.config.load import load_config_file, resolve_config
from vhi.errors import ConfigError

from support.paths import PROJECT_ROOT


def minimal(**site: object) -> dict:
    return {"sites": [{"name": "a", "source": {"type": "local", "root": "/data"}, **site}]}


def test_embedded_default_is_the_demo_cohort_on_any_device() -> None:
    settings = load_config_file(PROJECT_ROOT / "config.yaml")
    assert settings.device == "auto"  # a GPU the profile reserves is used, else the CPU
    (site,) = settings.sites
    assert site.name == "demo" and site.reference == "manual_if_present"
    assert site.source["root"] == str(settings.shared / "data" / "bone_mri")
    assert "R11" in site.source["cleaned"]


def test_defaults_are_filled_in() -> None:
    settings = resolve_config(minimal())
    assert (settings.work_dir, settings.results_dir, settings.logs_dir) == ("work", "results", "logs")
    assert settings.bundle == "sij_disease_region_unet"
    assert settings.timepoints == ("pre", "post")
    source = settings.sites[0].source
    assert source["sheet"] == "demo" and source["outbox"] == "outbox"
    assert source["cleaned"] == "cleaned/{site}/{subject}/{session}.nii.gz"


def test_shared_key_replaces_the_variable(tmp_path: Path) -> None:
    config = minimal()
    config["shared"] = str(tmp_path)
    config["sites"][0]["source"]["root"] = "${VHI_SHARED}/x"
    assert resolve_config(config).sites[0].source["root"] == f"{tmp_path}/x"


def test_shared_defaults_to_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VHI_SHARED", str(tmp_path))
    config = minimal()
    config["sites"][0]["source"]["root"] = "$VHI_SHARED/y"
    assert resolve_config(config).sites[0].source["root"] == f"{tmp_path}/y"


@pytest.mark.parametrize(("change", "named"), [
    (lambda c: c.update(tpyo=1), "tpyo"),
    (lambda c: c.update(model={"devcie": "cpu"}), "devcie"),
    (lambda c: c["sites"][0].update(refrence="auto"), "refrence"),
    (lambda c: c["sites"][0]["source"].update(outbx="x"), "outbx"),
    (lambda c: c["sites"][0].update(reference="sometimes"), "sometimes"),
    (lambda c: c["sites"][0].update(name="bad name"), "bad name"),
])
def test_invalid_config_names_the_key(change, named: str) -> None:
    config = minimal()
    change(config)
    with pytest.raises(ConfigError, match=named):
        resolve_config(config)


def test_duplicate_site_is_rejected() -> None:
    config = minimal()
    config["sites"].append(dict(config["sites"][0]))
    with pytest.raises(ConfigError, match="site a is defined twice"):
        resolve_config(config)


def test_every_schema_key_has_a_description() -> None:
    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            for name, sub in node.get("properties", {}).items():
                assert "description" in sub, f"{where}.{name} has no description"
            if node.get("type") == "object" and "properties" in node:
                assert node.get("additionalProperties") is not True, where
                assert "additionalProperties" in node, f"{where} allows unknown keys"
            for key, sub in node.items():
                walk(sub, f"{where}.{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{where}[{i}]")

    for name in ("config.schema.yaml", "sheet.schema.yaml"):
        walk(yaml.safe_load((PROJECT_ROOT / "src" / "vhi" / "config" / "schemas" / name).read_text()), name)


def test_config_does_not_mutate_the_input() -> None:
    config = minimal()
    resolve_config(config)
    assert "work_dir" not in config


# ----------------------------------------------------------------------------- readers
def two_sites(**extra: object) -> dict:
    config = minimal()
    config["sites"].append({"name": "b", "source": {"type": "local", "root": "/data"}})
    return {**config, **extra}


def test_readers_and_reading_defaults() -> None:
    settings = resolve_config(two_sites(readers=[
        {"id": "A", "name": "Dr A", "sites": ["a", "b"]}, {"id": "B", "sites": ["b"]}]))
    assert [(r.id, r.display_name, r.sites) for r in settings.readers] == [
        ("A", "Dr A", ("a", "b")), ("B", "B", ("b",))]
    assert settings.readers_of("b") == ("A", "B") and settings.readers_of("a") == ("A",)
    site = settings.site("a")
    assert (site.double_read, site.due_days, site.double_read_vhi) == (0.0, 14, "first")
    assert settings.reader("B").sites == ("b",)
    with pytest.raises(ConfigError, match=r"reader C.*known: A, B"):
        settings.reader("C")


def test_a_config_without_readers_has_none() -> None:
    assert resolve_config(minimal()).readers == ()


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c["readers"].append({"id": "C", "sites": ["nowhere"]}),
     r"config.readers\[1\].sites: reader C reads site nowhere, which is not in sites"),
    (lambda c: c["readers"].append({"id": "A", "sites": ["a"]}), "reader A is defined twice"),
    (lambda c: c["readers"].append({"id": "bad id", "sites": ["a"]}), "bad id"),
    (lambda c: c["readers"][0].update(sites=[]), "sites"),
    (lambda c: c["readers"][0].update(sites=["a", "a"]), "non-unique"),
    (lambda c: c["sites"][0].update(double_read=1.5), "1.5"),
    (lambda c: c["sites"][0].update(due_days=0), "due_days"),
    (lambda c: c["sites"][0].update(double_read_vhi="third"), "third"),
    (lambda c: c["sites"][1].update(double_read=0.1),
     r"config.sites\[1\].double_read: site b double-reads 0.1 of its sessions but has 1 reader"),
])
def test_invalid_readers_are_refused(change, message: str) -> None:
    config = two_sites(readers=[{"id": "A", "sites": ["a", "b"]}])
    change(config)
    with pytest.raises(ConfigError, match=message):
        resolve_config(config)


def test_double_read_with_two_readers_is_valid() -> None:
    config = two_sites(readers=[{"id": "A", "sites": ["a"]}, {"id": "B", "sites": ["a"]}])
    config["sites"][0].update(double_read=0.1, due_days=7, double_read_vhi="second")
    site = resolve_config(config).site("a")
    assert (site.double_read, site.due_days, site.double_read_vhi) == (0.1, 7, "second")


def test_the_old_name_of_reader_masks_is_refused_with_what_to_rename() -> None:
    config = minimal()
    config["sites"][0]["source"]["readers"] = {"R1": "readers/{session}.nii.gz"}
    with pytest.raises(ConfigError) as caught:
        resolve_config(config)
    assert str(caught.value).startswith("config.sites[0].source.readers: renamed: call it "
                                        "sites[0].source.reader_masks")
    config["sites"][0]["source"]["reader_masks"] = config["sites"][0]["source"].pop("readers")
    assert resolve_config(config).sites[0].source["reader_masks"] == {"R1": "readers/{session}.nii.gz"}


def test_the_image_key_names_what_snakemake_and_apptainer_take(tmp_path: Path) -> None:
    from vhi.config.image import container_uri

    project = tmp_path / "project"
    assert container_uri("dist/vhi-0.1.0.oci.tar", project) == f"oci-archive://{project}/dist/vhi-0.1.0.oci.tar"
    assert container_uri("/images/vhi.sif", project) == "/images/vhi.sif"
    assert container_uri("vhi.sif", project) == f"{project}/vhi.sif"
    assert container_uri("docker://registry.example.org/vhi:0.1.0", project) == (
        "docker://registry.example.org/vhi:0.1.0")
    # the default: the archive scripts/build-image.sh writes for this version
    assert resolve_config(minimal()).image == f"dist/vhi-{__version__}.oci.tar"
    assert 'archive="${ARCHIVE-$root/dist/vhi-${version}.oci.tar}"' in (
        PROJECT_ROOT / "scripts" / "build-image.sh").read_text()
