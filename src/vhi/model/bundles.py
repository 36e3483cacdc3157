"""Model bundles: the one registry the CLI and the workflow read.

A bundle names a versioned set of weights with its intended use, its input/output
contract and the sha256 of every file. Weights are never part of the repository:
they are looked up under ``<models dir>/<bundle name>/`` (``$VHI_MODELS``, default
``$VHI_SHARED/models``) and checked against the sha256 here before use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vhi.errors import InputError
from vhi.fileio import sha256_file
from vhi.settings import models_dir


@dataclass(frozen=True)
class Bundle:
    name: str
    version: str
    description: str
    intended_use: str
    input_contract: dict[str, Any]
    output_contract: dict[str, Any]
    folds: dict[str, str]  # file name -> sha256
    source: str
    changelog: tuple[str, ...] = field(default_factory=tuple)

    def directory(self, root: str | os.PathLike[str] | None = None) -> Path:
        return Path(root) if root is not None else models_dir() / self.name

    def fold_paths(self, root: str | os.PathLike[str] | None = None) -> list[Path]:
        """The verified weight files; a missing or altered file is an InputError naming it."""
        paths = []
        for name, expected in self.folds.items():
            path = self.directory(root) / name
            if not path.is_file():
                raise InputError(path, f"weights of model bundle {self.name} not found "
                                       "(set VHI_MODELS or VHI_SHARED)")
            actual = sha256_file(path)
            if actual != expected:
                raise InputError(path, f"sha256 {actual} does not match bundle {self.name} "
                                       f"{self.version} (expected {expected}): refusing altered weights")
            paths.append(path)
        return paths

    def metadata(self) -> dict[str, Any]:
        """What goes into provenance: name, version and the sha256 of every fold."""
        return {"name": self.name, "version": self.version, "sha256": dict(self.folds),
                "intended_use": self.intended_use}


SIJ_DISEASE_REGION_UNET = Bundle(
    name="sij_disease_region_unet",
    version="1.0.0",
    description="2-D U-Net ensemble (3 folds) segmenting the iliac and sacral bone around "
                "the sacroiliac joints on coronal-oblique T1-weighted MRI (Hepburn et al., "
                "PLOS ONE 2023).",
    intended_use="research use only, not for clinical decisions",
    input_contract={
        "modality": "MR",
        "sequence": "T1W",
        "plane": "coronal-oblique 2-D slices along the last array axis",
        "channels": 1,
        "dtype": "float32",
        "normalisation": "volume / (3 * std of the whole volume, ddof 0)",
        "orientation": "array space, each slice rot90(k=1) before the network, rot90(k=3) after",
        "in_plane_multiple_of": 8,
    },
    output_contract={"type": "binary mask", "combination": "mean of fold probabilities > 0.5",
                     "grid": "the T1W input grid"},
    folds={
        "model_1.pt": "def33e95bec1a8653022b236f6ac94bab0e2b4275e357d77e73a80ac89a99fac",
        "model_2.pt": "04f8b9a4010e7ee0dd2b1dec4329772da732032e0714e7b47f3a1521c03460c3",
        "model_3.pt": "57c3307a48e956c60d4ac8741c4fc00362c52b899a489c938743c970b437fbbc",
    },
    source="https://github.com/c-hepburn/Bone_MRI (commit 3338c88)",
    changelog=("1.0.0: the three published folds, as released with the paper",),
)

BUNDLES: dict[str, Bundle] = {SIJ_DISEASE_REGION_UNET.name: SIJ_DISEASE_REGION_UNET}
DEFAULT_BUNDLE = SIJ_DISEASE_REGION_UNET.name


def get_bundle(name: str = DEFAULT_BUNDLE) -> Bundle:
    try:
        return BUNDLES[name]
    except KeyError:
        raise InputError(name, f"unknown model bundle (known: {', '.join(sorted(BUNDLES))})") from None
