"""The 3D U-Net of the sparse-label transfer-learning paper, layer for layer.

REFERENCE.md section 1.B, from the public release (`src/model_unet3d.py`, `UNet3DModel`):

* every convolution 3x3x3 with 'valid' padding and a ReLU; no normalisation, no dropout;
* encoder blocks 1->w->2w, 2w->2w->4w, 4w->4w->8w, each followed by a 2x2x2 max-pool;
* bottom 8w->8w->16w;
* decoder: nearest-neighbour upsampling x2, the skip centre-cropped to the upsampled size,
  concatenated as [upsampled, skip], then two convolutions: 24w->8w->8w, 12w->4w->4w, 6w->2w->2w;
* head: 1x1x1 convolution 2w->n_classes and a softmax over channels (background is the LAST
  channel).

The published width w = 32 gives exactly 16,317,015 parameters with 23 classes. Because the
convolutions are valid, the output is 88 voxels smaller than the input along each axis (a
132-voxel cube gives a 44-voxel cube), so sliding-window inference needs a 44-voxel context
margin on every side. Arrays are (batch, channel, z, y, x), as in the release.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

PUBLISHED_WIDTH = 32
PUBLISHED_CLASSES = 23  # 22 structures + background (last channel)
PUBLISHED_PARAMETERS = 16_317_015
CONTEXT_MARGIN = 44  # voxels lost on each side by the valid convolutions
PUBLISHED_INPUT_SIDES = (108, 132, 156, 180)
MIN_INPUT_SIDE = 92  # the smallest length whose bottom block still has voxels left
HU_CLIP = (-500.0, 400.0)  # the release clips HU to this window and applies no other scaling


def output_side(input_side: int) -> int:
    """Output length along one axis for a valid input length (input - 88)."""
    if not is_valid_input_side(input_side):
        raise ValueError(f"{input_side} is not a valid U-Net input length (92 + 8k)")
    return input_side - 2 * CONTEXT_MARGIN


def is_valid_input_side(side: int) -> bool:
    """True when every pooling sees an even length and every skip crop is centred.

    Lengths that work are 92 + 8k (the published cubes 108, 132, 156, 180 are among them)."""
    return side >= MIN_INPUT_SIDE and (side - MIN_INPUT_SIDE) % 8 == 0


def valid_input_side(at_least: int) -> int:
    """The smallest valid input length that is at least `at_least`."""
    side = max(MIN_INPUT_SIDE, at_least)
    return side + (-(side - MIN_INPUT_SIDE)) % 8


def _conv(in_channels: int, out_channels: int) -> nn.Conv3d:
    return nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=0)


def _centre_crop(skip: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Crop `skip` (B, C, z, y, x) to the spatial size of `like`, centred."""
    slices = [slice(None), slice(None)]
    for have, want in zip(skip.shape[2:], like.shape[2:], strict=True):
        start = (have - want) // 2
        slices.append(slice(start, start + want))
    return skip[tuple(slices)]


class UNet3D(nn.Module):
    """The published network; `width` scales every layer (32 = published)."""

    def __init__(self, n_classes: int = PUBLISHED_CLASSES, width: int = PUBLISHED_WIDTH):
        super().__init__()
        w = width
        self.width = width
        self.n_classes = n_classes
        # Encoder.
        self.enc1a, self.enc1b = _conv(1, w), _conv(w, 2 * w)
        self.enc2a, self.enc2b = _conv(2 * w, 2 * w), _conv(2 * w, 4 * w)
        self.enc3a, self.enc3b = _conv(4 * w, 4 * w), _conv(4 * w, 8 * w)
        # Bottom.
        self.bottom_a, self.bottom_b = _conv(8 * w, 8 * w), _conv(8 * w, 16 * w)
        # Decoder: [upsampled, skip] -> two convolutions.
        self.dec3a, self.dec3b = _conv(16 * w + 8 * w, 8 * w), _conv(8 * w, 8 * w)
        self.dec2a, self.dec2b = _conv(8 * w + 4 * w, 4 * w), _conv(4 * w, 4 * w)
        self.dec1a, self.dec1b = _conv(4 * w + 2 * w, 2 * w), _conv(2 * w, 2 * w)
        self.head = nn.Conv3d(2 * w, n_classes, kernel_size=1)

    def conv_layers(self) -> list[nn.Conv3d]:
        """The 15 convolutions in the order of the published model (and of its .h5 file)."""
        return [
            self.enc1a, self.enc1b, self.enc2a, self.enc2b, self.enc3a, self.enc3b,
            self.bottom_a, self.bottom_b,
            self.dec3a, self.dec3b, self.dec2a, self.dec2b, self.dec1a, self.dec1b,
            self.head,
        ]  # fmt: skip

    def fine_tune_layers(self) -> list[nn.Conv3d]:
        """What the paper trains when fine-tuning: the last 3x3x3 convolution and the head."""
        return [self.dec1b, self.head]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-softmax scores (B, n_classes, z-88, y-88, x-88) for clipped HU input (B, 1, z, y, x)."""
        skip1 = F.relu(self.enc1b(F.relu(self.enc1a(x))))
        skip2 = F.relu(self.enc2b(F.relu(self.enc2a(F.max_pool3d(skip1, 2)))))
        skip3 = F.relu(self.enc3b(F.relu(self.enc3a(F.max_pool3d(skip2, 2)))))
        x = F.relu(self.bottom_b(F.relu(self.bottom_a(F.max_pool3d(skip3, 2)))))
        for skip, conv_a, conv_b in (
            (skip3, self.dec3a, self.dec3b),
            (skip2, self.dec2a, self.dec2b),
            (skip1, self.dec1a, self.dec1b),
        ):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = torch.cat([x, _centre_crop(skip, x)], dim=1)
            x = F.relu(conv_b(F.relu(conv_a(x))))
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities, softmax over channels (background last), as the release outputs."""
        return torch.softmax(self.logits(x), dim=1)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
