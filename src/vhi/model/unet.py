"""The 2-D U-Net of Hepburn et al., rebuilt so the published state dicts load strictly.

Layout (../shared/METHOD.md): four encoder levels of [Conv3x3 → BN → ReLU] × 2 with
16, 32, 64, 128 channels and 2×2 max-pooling between them; three decoder levels of
bilinear ×2 upsampling (align_corners=True) → Conv1x1 halving the channels →
concatenation [upsampled, skip] → [Conv3x3 → BN → ReLU] × 2; a final Conv1x1 16→1 and
a sigmoid. The module returns probabilities. Parameter names match the published
files (``down_path.*.convblock``, ``up_path.*.UpBlock``/``ConvBlock``, ``last_layer``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - the conventional torch alias

CHANNELS = (16, 32, 64, 128)


class ConvBlock(nn.Module):
    """[Conv3x3 → BatchNorm → ReLU] × 2; parameters at ``convblock.{0,1,3,4}``."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.convblock = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convblock(x)


class UpLevel(nn.Module):
    """Upsample ×2 → Conv1x1 (halve channels) → concat [up, skip] → ConvBlock.

    The forward pass applies the 1×1 convolution *before* the upsampling: both are
    linear, the convolution mixes channels per pixel and the bilinear upsampling mixes
    pixels per channel with weights that sum to one (so the bias passes unchanged),
    hence they commute. At half resolution the convolution does a quarter of the work
    and the upsampling moves half the channels; the output equals the published order
    up to float rounding (``tests/test_model.py``).
    """

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        out_ch = in_ch // 2
        self.UpBlock = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(in_ch, out_ch, kernel_size=1),
        )
        self.ConvBlock = ConvBlock(in_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        upsample, conv = self.UpBlock
        return self.ConvBlock(torch.cat([upsample(conv(x)), skip], dim=1))

    def forward_published_order(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Upsample, then convolve, as the paper's module does (kept for the tests)."""
        return self.ConvBlock(torch.cat([self.UpBlock(x), skip], dim=1))


class UNet(nn.Module):
    """Input (N, 1, H, W) with H, W divisible by 8; output probabilities (N, 1, H, W)."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        chans = (in_channels, *CHANNELS)
        self.down_path = nn.ModuleList(ConvBlock(chans[i], chans[i + 1]) for i in range(4))
        self.up_path = nn.ModuleList(UpLevel(c) for c in reversed(CHANNELS[1:]))
        self.last_layer = nn.Conv2d(CHANNELS[0], 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down_path):
            x = block(x)
            if i < len(self.down_path) - 1:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for level, skip in zip(self.up_path, reversed(skips), strict=True):
            x = level(x, skip)
        return torch.sigmoid(self.last_layer(x))


def fuse_batchnorm(model: UNet) -> UNet:
    """Fold every eval-mode BatchNorm into the convolution before it (same outputs).

    Done once after loading; removes a full pass over each activation map.
    """
    for module in model.modules():
        if isinstance(module, ConvBlock):
            seq = module.convblock
            for conv_i, bn_i in ((0, 1), (3, 4)):
                seq[conv_i] = torch.nn.utils.fusion.fuse_conv_bn_eval(seq[conv_i], seq[bn_i])
                seq[bn_i] = nn.Identity()
    return model
