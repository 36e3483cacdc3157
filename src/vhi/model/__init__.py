"""The published disease-region U-Net: architecture, model bundles and ensemble inference."""

from vhi.model.bundles import BUNDLES, DEFAULT_BUNDLE, Bundle, get_bundle
from vhi.model.inference import DiseaseRegionEnsemble, choose_device
from vhi.model.unet import UNet

__all__ = ["BUNDLES", "DEFAULT_BUNDLE", "Bundle", "DiseaseRegionEnsemble", "UNet",
           "choose_device", "get_bundle"]
