"""VHI and agreement measures between masks on one voxel grid."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def vhi_ml(mask: np.ndarray, voxel_volume_ml: float) -> float:
    """Volume of hyperintense inflammation: voxels with label >= 1 times the voxel volume."""
    return int(np.count_nonzero(mask)) * float(voxel_volume_ml)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two masks (label >= 1); 1.0 when both are empty."""
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(a & b)) / total


def volume_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """1 - |Va - Vb| / (Va + Vb); 1.0 when both are empty."""
    va, vb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    if va + vb == 0:
        return 1.0
    return 1.0 - abs(va - vb) / (va + vb)


@dataclass(frozen=True)
class Agreement:
    """Agreement of two masks of the same grid."""

    dice: float
    volume_similarity: float
    voxels_a: int
    voxels_b: int
    voxels_both: int
    ml_a: float
    ml_b: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def agreement(a: np.ndarray, b: np.ndarray, voxel_volume_ml: float) -> Agreement:
    """Dice, volume similarity and volumes of two masks; they must share one shape."""
    if np.shape(a) != np.shape(b):
        raise ValueError(f"masks of different shapes {np.shape(a)} and {np.shape(b)}")
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    na, nb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    return Agreement(
        dice=dice(a, b),
        volume_similarity=volume_similarity(a, b),
        voxels_a=na,
        voxels_b=nb,
        voxels_both=int(np.count_nonzero(a & b)),
        ml_a=na * voxel_volume_ml,
        ml_b=nb * voxel_volume_ml,
    )
