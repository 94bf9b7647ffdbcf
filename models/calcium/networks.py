"""The two ConvNets of direct coronary calcium scoring (de Vos et al., IEEE TMI 2019).

RegistrationNet follows the affine DLIR design (AIRNet, BDdeVos/TorchIR): the fixed (atlas)
and the moving image go through one shared convolutional trunk (blocks of 3x3x3 convolutions
with ELU and average pooling); their features are joined by two dense layers of 64 units and
separate heads give translation, rotation and anisotropic scaling. One change: the trunk's
last feature map is flattened rather than globally pooled, so the dense layers see where
things are, which a field-of-view alignment needs.

ScoreNet is fully convolutional. Its last layer is a non-negative map with one channel per
artery (LAD, LCX, RCA) on the 3 x 3 x 2.5 mm score grid; the sum of a channel is that artery's
predicted Agatston score. The map is the decision feedback: it shows where the score came from.
The map is gated by the Agatston definition itself (the prior): a voxel without a native voxel
at 130 HU or more carries no score.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

ARTERY_CHANNELS = ("LAD", "LCX", "RCA")
N_ACQUISITION_FEATURES = 3  # slice increment, slice thickness, pixel spacing (scaled)

REGISTRATION_POOL = 2  # the network sees the 5 mm registration grid averaged to 10 mm
MAX_TRANSLATION_MM = 160.0
MAX_ROTATION_RAD = math.radians(25)
MAX_LOG_SCALE = math.log(1.3)


def _conv(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_ch, out_ch, 3, stride=stride, padding=1), nn.ELU(inplace=True)
    )


class RegistrationNet(nn.Module):
    """Affine registration of a moving volume to the fixed atlas (both 40^3 at 10 mm)."""

    def __init__(self, width: int = 16, size: int = 40) -> None:
        super().__init__()
        channels = [1, width, width, 2 * width, 2 * width, 2 * width]
        blocks = []
        for i in range(5):
            blocks += (
                [_conv(channels[i], channels[i + 1]), nn.AvgPool3d(2)]
                if i < 4
                else [_conv(channels[i], channels[i + 1])]
            )
        self.trunk = nn.Sequential(*blocks)
        flat = channels[-1] * (size // 16) ** 3
        self.dense = nn.Sequential(nn.Linear(2 * flat, 64), nn.ELU(), nn.Linear(64, 64), nn.ELU())
        self.translation = nn.Linear(64, 3)
        self.rotation = nn.Linear(64, 3)
        self.scale = nn.Linear(64, 3)
        for head in (self.translation, self.rotation, self.scale):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> dict[str, torch.Tensor]:
        """Parameters of x_moving = R S x_fixed + t, in mm and radians about the grid centres."""
        features = torch.cat([self.trunk(fixed).flatten(1), self.trunk(moving).flatten(1)], 1)
        return self.heads(features)

    def heads(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """The dense layers and heads on joined (fixed, moving) trunk features; inference
        computes the atlas's trunk features once and calls this directly."""
        hidden = self.dense(features)
        return {
            "translation_mm": MAX_TRANSLATION_MM * torch.tanh(self.translation(hidden)),
            "rotation_rad": MAX_ROTATION_RAD * torch.tanh(self.rotation(hidden)),
            "scale": torch.exp(MAX_LOG_SCALE * torch.tanh(self.scale(hidden))),
        }


def rotation_matrix(angles: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (B, 3, 3) from angles about x, y, z (B, 3), applied z * y * x."""
    cx, cy, cz = torch.cos(angles).unbind(1)
    sx, sy, sz = torch.sin(angles).unbind(1)
    one, zero = torch.ones_like(cx), torch.zeros_like(cx)
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], 1).view(-1, 3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], 1).view(-1, 3, 3)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], 1).view(-1, 3, 3)
    return rz @ ry @ rx


def affine_matrix(params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, t): x_moving = A x_fixed + t, in mm relative to the grid centres."""
    a = rotation_matrix(params["rotation_rad"]) @ torch.diag_embed(params["scale"])
    return a, params["translation_mm"]


def warp(
    moving: torch.Tensor, a: torch.Tensor, t: torch.Tensor, half_extent_mm: float
) -> torch.Tensor:
    """Resample `moving` (B, C, D, H, W; axes z, y, x of an identity-direction grid) at
    A x + t for every fixed-grid position x. Outside the volume: the edge value (air)."""
    theta = torch.cat([a, (t / half_extent_mm).unsqueeze(-1)], dim=2)  # grid coords are (x, y, z)
    grid = F.affine_grid(theta, list(moving.shape), align_corners=False)
    return F.grid_sample(moving, grid, mode="bilinear", padding_mode="border", align_corners=False)


def align(
    net: RegistrationNet,
    atlas_features: torch.Tensor,
    moving: torch.Tensor,
    half_extent_mm: float,
    passes: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Align `moving` (B, 1, D, H, W) to the atlas whose trunk features are given (1, F).

    With passes > 1 the network looks again at the scan as aligned so far and its correction is
    composed with the transform: x_moving = A1 (A2 x + t2) + t1. Returns (A, t, aligned scan).
    """
    batch = len(moving)
    a = torch.eye(3, device=moving.device).expand(batch, 3, 3)
    t = torch.zeros(batch, 3, device=moving.device)
    aligned = moving
    for _ in range(passes):
        features = torch.cat([atlas_features.expand(batch, -1), net.trunk(aligned).flatten(1)], 1)
        step_a, step_t = affine_matrix(net.heads(features))
        t = t + (a @ step_t.unsqueeze(-1)).squeeze(-1)
        a = a @ step_a
        aligned = warp(moving, a, t, half_extent_mm)
    return a, t, aligned


def _conv_bn(in_ch: int, out_ch: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    """Convolution, batch normalisation, ELU: the score network's unit. Without normalisation
    its activations grew by orders of magnitude within a few hundred steps and the last layer
    died (every unit at ELU's floor); batch statistics use the running averages at inference,
    so a scan's result does not depend on the crop size or on other scans."""
    return nn.Sequential(
        nn.Conv3d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm3d(out_ch),
        nn.ELU(inplace=True),
    )


def _upsample_join(low: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    return torch.cat([F.interpolate(low, size=skip.shape[2:], mode="trilinear"), skip], 1)


def _merge(in_ch: int, out_ch: int) -> nn.Sequential:
    return _conv_bn(in_ch, out_ch, kernel=1)


# Agatston units that one score voxel (3 x 3 x 2.5 mm) carries per unit of density weight when
# all its native voxels are counted: 9 mm^2 of area on each of 2.5 mm / increment slices, times
# the increment / 3 mm slice normalisation of the score = 9 x 2.5 / 3, whatever the scan's own
# pixel size and slice increment (models/agatston.py).
AU_PER_COUNTED_VOXEL = 9.0 * 2.5 / 3.0
MAX_LOG_CORRECTION = 2.0


# What the map multiplies (the score a voxel would carry if all its candidate calcium were
# coronary), by the score network's version:
# * "candidate" (from version 2.0): the candidate-score channel, the Agatston definition
#   computed on the scan's native voxels (components, minimum area, density weight) and binned
#   onto the score grid the way the truth's score density is (preprocess.py);
# * "summary" (version 1.0): the definition applied to the score voxel's own summary, calcium
#   fraction x density weight of the peak x AU_PER_COUNTED_VOXEL. Measured on 50 phantoms with
#   the shipped 1.0, it put only about half of a small lesion's score (totals under 30 AU) on
#   the voxels where the truth lies (the box filter spreads it over neighbours), which the
#   network had to make up by counting neighbours it was trained to call absent.
PRIORS = ("candidate", "summary")


def calcium_prior(channels: torch.Tensor, prior: str = "candidate") -> torch.Tensor:
    """The score a voxel would carry if all its candidate calcium were coronary (B, 1, Z, Y, X),
    zero where no native voxel reaches 130 HU (see PRIORS). The network decides which of it is
    coronary, in which artery, and corrects it where the voxel misleads (a voxel shared by a
    lesion and bone or another artery; with "summary", also lesions under 1 mm^2 and peaks
    shared with bone next door)."""
    if prior == "candidate":
        return channels[:, 3:4]
    peak, fraction = channels[:, 1:2], channels[:, 2:3]
    weight = 1.0 + (peak >= 200).float() + (peak >= 300).float() + (peak >= 400).float()
    return torch.where(peak >= 130.0, AU_PER_COUNTED_VOXEL * fraction * weight, 0.0)


class ScoreNet(nn.Module):
    """Fully convolutional direct Agatston regression with a per-artery score map.

    Input: the score-grid channels at 3 x 3 x 2.5 mm (preprocess.py: mean HU, peak HU, calcium
    fraction, candidate score, unnormalised; the "summary" prior of version 1.0 does not see the
    candidate score) and the acquisition features. An encoder to 1/8 resolution
    (24 mm in plane; a receptive field of about 15 cm, enough to tell the arteries apart by
    where they run on the heart) and a decoder back to the input grid with skip connections;
    decoder levels merge with 1x1 convolutions before their 3x3 convolution, which keeps a
    scan well inside the 2 s CPU budget.

    Output: one non-negative map per artery on the input grid, in Agatston units per voxel:
    presence x correction x prior. The prior (`calcium_prior`, PRIORS) is the score the voxel's
    own calcium would carry; presence (a sigmoid per artery) says whether it is that artery's
    calcium rather than bone, aortic or valve calcium or noise; the correction (exp of a log
    bounded to +-2) adjusts its size. Where no native voxel reaches 130 HU the map is exactly
    zero, as the Agatston definition demands, so the network only has to learn the coronary
    question on a few thousand candidate voxels instead of regressing magnitudes across five
    orders of magnitude from totals (which, trained from scratch on a CPU, collapsed to zero).
    """

    def __init__(
        self, width: int = 16, presence_threshold: float | None = None, prior: str = "candidate"
    ) -> None:
        super().__init__()
        if prior not in PRIORS:
            raise ValueError(f"unknown prior {prior!r}; one of {PRIORS}")
        self.prior = prior
        # At inference, optionally a hard decision: a voxel counts in full (presence 1) where
        # its presence probability reaches the threshold and not at all below it. Training
        # always uses the soft product; the model card says which the shipped model uses and
        # why (validation figures of both).
        self.presence_threshold = presence_threshold
        w = width
        n_channels = 4 if prior == "candidate" else 3
        self.stem = _conv_bn(n_channels + N_ACQUISITION_FEATURES, w)  # 3 mm
        self.down1 = nn.Sequential(_conv_bn(w, 2 * w, stride=2), _conv_bn(2 * w, 2 * w))  # 6 mm
        self.down2 = nn.Sequential(
            _conv_bn(2 * w, 4 * w, stride=2), _conv_bn(4 * w, 4 * w)
        )  # 12 mm
        self.down3 = nn.Sequential(
            _conv_bn(4 * w, 4 * w, stride=2), _conv_bn(4 * w, 4 * w)
        )  # 24 mm
        self.up2 = nn.Sequential(_merge(8 * w, 4 * w), _conv_bn(4 * w, 2 * w))
        self.up1 = nn.Sequential(_merge(4 * w, 2 * w), _conv_bn(2 * w, w))
        self.up0 = nn.Sequential(_merge(2 * w, w), _conv_bn(w, w // 2))
        n = len(ARTERY_CHANNELS)
        self.head = nn.Conv3d(w // 2, 2 * n, 1)
        with torch.no_grad():
            self.head.bias[:n].fill_(-4.0)  # most candidate voxels are bone or noise
            self.head.bias[n:].zero_()

    def forward(self, channels: torch.Tensor, acquisition: torch.Tensor) -> torch.Tensor:
        """channels (B, 4, Z, Y, X) as preprocess.score_input gives them; acquisition (B, 3).
        Returns the score map (B, 3, Z, Y, X), non-negative, in Agatston units per voxel."""
        return self.regression_map(*self.forward_factors(channels, acquisition))

    def regression_map(
        self,
        score_map: torch.Tensor,
        presence_logit: torch.Tensor,
        log_correction: torch.Tensor,
        prior: torch.Tensor,
    ) -> torch.Tensor:
        """The direct regression's map from forward_factors' output: the soft product, or with
        `presence_threshold` the hard decision times correction times prior."""
        if self.presence_threshold is None:
            return score_map
        presence = (torch.sigmoid(presence_logit) >= self.presence_threshold).to(prior.dtype)
        return presence * torch.exp(log_correction) * prior

    def forward_factors(self, channels: torch.Tensor, acquisition: torch.Tensor):
        """(map, presence logits, log corrections, prior): the map and what training needs."""
        b, _, z, y, x = channels.shape
        conditioning = acquisition.view(b, -1, 1, 1, 1).expand(b, acquisition.shape[1], z, y, x)
        inputs = normalise_score_input(channels, with_candidate=self.prior == "candidate")
        s0 = self.stem(torch.cat([inputs, conditioning], 1))
        s1 = self.down1(s0)
        s2 = self.down2(s1)
        s3 = self.down3(s2)
        u2 = self.up2(_upsample_join(s3, s2))
        u1 = self.up1(_upsample_join(u2, s1))
        u0 = self.up0(_upsample_join(u1, s0))
        presence_logit, log_correction = self.factors(self.head(u0))
        prior = calcium_prior(channels, self.prior)
        score_map = torch.sigmoid(presence_logit) * torch.exp(log_correction) * prior
        return score_map, presence_logit, log_correction, prior

    @staticmethod
    def factors(head: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(presence logits, log corrections) from the head's 2 x 3 channels."""
        n = len(ARTERY_CHANNELS)
        bound = MAX_LOG_CORRECTION
        return head[:, :n], bound * torch.tanh(head[:, n:] / bound)


def normalise_score_input(channels: torch.Tensor, with_candidate: bool = True) -> torch.Tensor:
    """Score-grid channels (mean HU, peak HU, calcium fraction, candidate score) to network
    range: soft tissue and calcium resolved, air and lung flattened; the candidate score (0 to
    about 36 AU per voxel) on a log scale."""
    hu = (channels[:, :2].clamp(-300.0, 1500.0) - 100.0) / 300.0
    parts = [hu, 4.0 * channels[:, 2:3] - 1.0]
    if with_candidate:
        parts.append(torch.log1p(channels[:, 3:4].clamp(min=0.0)) - 1.0)
    return torch.cat(parts, 1)


def acquisition_features(increment_mm: float, thickness_mm: float, pixel_mm: float) -> list[float]:
    return [increment_mm / 3.0, thickness_mm / 3.0, pixel_mm]


def registration_scale(hu: torch.Tensor) -> torch.Tensor:
    """HU to the registration's units: clamped to +-1000 HU and scaled to [-1, 1]."""
    return hu.clamp(-1000.0, 1000.0) / 1000.0


def registration_input(volume: torch.Tensor, scaled: bool = False) -> torch.Tensor:
    """The 5 mm registration volume (B, 1, 80, 80, 80), in HU or already `scaled`, to the
    network's input: scaled to [-1, 1] and averaged to 10 mm (B, 1, 40, 40, 40). 10 mm is
    enough for the field of view (heart_search.py can refine the heart on the 5 mm grid) and
    makes the registration eight times cheaper to train and run than at 5 mm."""
    return F.avg_pool3d(volume if scaled else registration_scale(volume), REGISTRATION_POOL)
