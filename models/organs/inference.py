"""Organ segmentation of one CT volume with a registered U-Net model (models.organs.registry).

    segmenter = OrganSegmenter(registry.find(None))     # the shipped base model, sha256 checked
    result = segmenter.segment(ct)                      # ct: SimpleITK image in HU, any grid
    result.labels                                       # uint8 Label values on the CT's own grid
    result.volumes_ml["heart"], heart_in_field_of_view(result)

Steps (each a function below, so the tests and the training code can check them one by one):

1. **Model grid** (`model_grid`). The CT is resampled (linear) onto an axis-aligned LPS grid
   (x to the patient's left, y to the back, z to the head; identity direction) at the spec's
   `spacing_mm`, covering the CT's extent. Whatever the CT's orientation (head or feet first,
   flipped rows), the network sees one orientation, array order Z, Y, X as the release
   requires. Before downsampling, each axis is smoothed with a Gaussian of sigma
   (target - source spacing) / 2 mm (anti-aliasing; skimage's rule), so a 0.7 mm scan read at
   4 mm looks like a scan reconstructed at about 4 mm rather than a noisy point sample.
   Voxels outside the scan get the clip floor (hu_clip[0], -500: what air becomes anyway).
2. **HU clip** to the spec's `hu_clip` ([-500, 400] as published); no other scaling.
3. **Sliding windows** (`tile_plan`, `predict_labels`). A window of up to `window_side` voxels
   per axis predicts the central block (input - 88 voxels per axis); the 44-voxel context on
   every side comes from the neighbouring volume or from padding. The window side is the
   spec's `input_side` (the training cube) or, for a narrow network whose activations allow
   it, larger up to 180 (`default_window_side`): the network is fully convolutional, so the
   window size changes the cost, not the result. Window starts are multiples
   of 8 voxels, the period of the network's three 2x2x2 poolings, so every voxel sees the same
   context in the same pooling phase whichever window computes it: the tiled result equals
   that of one window covering the whole volume (a unit test checks it). Output tiles overlap
   by at least 4 voxels (the output side is 4 + 8k, the stride a multiple of 8) and by
   `overlap` x the output side when asked; probabilities are averaged where tiles overlap.
   Because of the alignment, more overlap does not change the result (tested), so the default
   is the minimum. Along an axis shorter than one output tile the window shrinks to the
   smallest valid length, which saves time on short scans.
4. **Post-processing as published** (release `load_pretrained_model.py`): foreground
   probabilities > 0.5, background prepended, argmax; i.e. a voxel gets the foreground channel
   whose probability exceeds 0.5 (with softmax at most one can), otherwise background.
   Channels map to `models.labels.Label` values through the spec's `label_values`.
5. **Back to the CT's grid**: the label map is resampled with nearest neighbour (not the
   probabilities: 23 channels on a 512 x 512 x 100 grid would need 2.4 GB). Volumes in ml are
   counted on that grid.

Memory: probabilities are accumulated one row of z-tiles at a time (the rows above are final
once the next row starts), so a 1.5 mm model needs about 2 x 23 x 44 x 240 x 240 floats, not
the whole volume's. Deterministic: fixed tile order, `torch.inference_mode`, and on CUDA the
cuDNN deterministic algorithms.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from models.device import pick_device
from models.labels import Label
from models.organs.registry import ModelSpec, load_model
from models.organs.unet import (
    CONTEXT_MARGIN,
    HU_CLIP,
    UNet3D,
    is_valid_input_side,
    output_side,
)

POOLING_PERIOD = 8  # 2 ** (number of 2x2x2 poolings): window starts are multiples of it
DEFAULT_OVERLAP = 0.0  # extra overlap of output tiles (fraction); see the module docstring
MAX_WINDOW_SIDE = 180  # the largest cube the release lists
WINDOW_BYTES = 512 * 2**20  # budget of the first block's activations (see default_window_side)


@dataclass
class OrganResult:
    labels: sitk.Image  # uint8 Label values on the CT's grid, 0 = background
    volumes_ml: dict[str, float]  # every foreground channel of the model, 0.0 when absent
    spec: ModelSpec
    seconds: float
    device: str
    model_grid: dict = field(default_factory=dict)  # size and spacing the network saw

    def to_dict(self) -> dict:
        return {
            "model": self.spec.name,
            "version": self.spec.version,
            "device": self.device,
            "seconds": round(self.seconds, 2),
            "volumes_ml": {k: round(v, 1) for k, v in self.volumes_ml.items()},
            "model_grid": self.model_grid,
        }


def fit_output_length(length: int) -> int:
    """The smallest valid output length (4 + 8k) that is at least `length`."""
    return 4 + POOLING_PERIOD * max(0, math.ceil((length - 4) / POOLING_PERIOD))


def tile_plan(length: int, max_out: int, overlap: float = DEFAULT_OVERLAP) -> list[tuple[int, int]]:
    """(start, output length) of each output tile along an axis of `length` voxels.

    Starts are multiples of 8; the tiles cover [0, length) and may run past its end (the
    volume is padded there). The last tile is only as long as it needs to be."""
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap is a fraction in [0, 1), got {overlap}")
    stride = int(max_out * (1 - overlap)) // POOLING_PERIOD * POOLING_PERIOD
    stride = max(POOLING_PERIOD, min(stride, (max_out - 4) // POOLING_PERIOD * POOLING_PERIOD))
    starts = [0]
    while starts[-1] + max_out < length:
        starts.append(starts[-1] + stride)
    return [(s, min(max_out, fit_output_length(length - s))) for s in starts]


def default_window_side(spec: ModelSpec) -> int:
    """The window side inference uses: the largest valid side up to MAX_WINDOW_SIDE whose first
    block (2 x width channels of float32) stays within WINDOW_BYTES, never below the spec's
    input_side. Larger windows repeat less context (a 180 cube predicts 92^3 voxels for 180^3
    input, a 132 cube 44^3 for 132^3: 2.8 times the work per voxel) and give the same result."""
    side = spec.input_side
    while side + 8 <= MAX_WINDOW_SIDE and 2 * spec.width * 4 * (side + 8) ** 3 <= WINDOW_BYTES:
        side += 8
    return side


def model_grid(ct: sitk.Image, spacing_zyx: list[float], pad_hu: float) -> sitk.Image:
    """The CT resampled (anti-aliased, linear) onto an identity-direction grid at spacing_zyx,
    covering the CT's extent; float32 HU, `pad_hu` outside the scan."""
    target_xyz = [float(v) for v in reversed(spacing_zyx)]
    size = np.asarray(ct.GetSize())
    corners = np.array(
        [
            ct.TransformContinuousIndexToPhysicalPoint([float(c) for c in corner])
            for corner in np.array(np.meshgrid(*[[0, n - 1] for n in size])).reshape(3, -1).T
        ]
    )
    low, high = corners.min(axis=0), corners.max(axis=0)
    new_size = [
        int(math.floor((hi - lo) / sp + 1e-6)) + 1
        for lo, hi, sp in zip(low, high, target_xyz, strict=True)
    ]
    image = sitk.Cast(ct, sitk.sitkFloat32)
    # Anti-aliasing along each index axis: its target spacing is the target spacing along the
    # physical axis it points to (direction cosines), sigma = (target - source) / 2 mm.
    direction = np.abs(np.asarray(ct.GetDirection()).reshape(3, 3))
    along = direction.T @ np.asarray(target_xyz)
    sigmas = [max(0.0, (t - s) / 2) for t, s in zip(along, ct.GetSpacing(), strict=True)]
    if max(sigmas) > 0.05:
        image = sitk.SmoothingRecursiveGaussian(image, [max(s, 1e-3) for s in sigmas])
    reference = sitk.Image([int(v) for v in new_size], sitk.sitkFloat32)
    reference.SetSpacing(target_xyz)
    reference.SetOrigin([float(v) for v in low])
    reference.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return sitk.Resample(
        image, reference, sitk.Transform(), sitk.sitkLinear, float(pad_hu), sitk.sitkFloat32
    )


def _postprocess(probabilities: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Published post-processing of (C, ...) probabilities (background last) -> Label values."""
    foreground = probabilities[:-1]
    best = foreground.argmax(axis=0)
    top = np.take_along_axis(foreground, best[None], axis=0)[0]
    return np.where(top > 0.5, lut[best], 0).astype(np.uint8)


def _windows(net, volume, window_side, overlap, device, pad_value):
    """Yield (z-row index, output slices, probabilities) for every tile; `volume` is clipped HU
    (z, y, x) float32. Tiles come row by row along z, in a fixed order."""
    max_out = output_side(window_side)
    plans = [tile_plan(n, max_out, overlap) for n in volume.shape]
    ends = [max(s + n for s, n in plan) for plan in plans]
    m = CONTEXT_MARGIN
    padded = np.pad(
        volume,
        [(m, m + end - n) for end, n in zip(ends, volume.shape, strict=True)],
        constant_values=float(pad_value),
    )
    for row, (z, nz) in enumerate(plans[0]):
        for y, ny in plans[1]:
            for x, nx in plans[2]:
                window = padded[z : z + nz + 2 * m, y : y + ny + 2 * m, x : x + nx + 2 * m]
                tensor = torch.from_numpy(np.ascontiguousarray(window))[None, None].to(device)
                probabilities = net(tensor)[0].float().cpu().numpy()
                yield row, (z, nz, y, ny, x, nx), probabilities


def predict_probabilities(
    net: UNet3D,
    volume: np.ndarray,
    window_side: int,
    overlap: float = DEFAULT_OVERLAP,
    device="cpu",
    pad_value: float = HU_CLIP[0],
) -> np.ndarray:
    """Softmax probabilities (C, z, y, x) of a whole clipped volume, tiles averaged. Holds the
    whole volume's probabilities: for tests and small volumes (predict_labels streams)."""
    shape = volume.shape
    total = np.zeros((net.n_classes, *shape), dtype=np.float32)
    count = np.zeros(shape, dtype=np.float32)
    with torch.inference_mode():
        for _, (z, nz, y, ny, x, nx), probabilities in _windows(
            net, volume, window_side, overlap, device, pad_value
        ):
            dz, dy, dx = (
                min(n, size - s) for s, n, size in zip((z, y, x), (nz, ny, nx), shape, strict=True)
            )
            total[:, z : z + dz, y : y + dy, x : x + dx] += probabilities[:, :dz, :dy, :dx]
            count[z : z + dz, y : y + dy, x : x + dx] += 1
    return total / count


def predict_labels(
    net: UNet3D,
    volume: np.ndarray,
    window_side: int,
    label_values: list[int],
    overlap: float = DEFAULT_OVERLAP,
    device="cpu",
    pad_value: float = HU_CLIP[0],
) -> np.ndarray:
    """Label values (uint8, z, y, x) of a clipped volume: tiles averaged, published
    post-processing, probabilities held for one row of z-tiles (plus its overlap) at a time."""
    shape = volume.shape
    lut = np.asarray(label_values, dtype=np.uint8)
    labels = np.zeros(shape, dtype=np.uint8)
    pending: tuple[int, np.ndarray, np.ndarray] | None = None  # (z start, sums, counts)

    def finish(start: int, total: np.ndarray, count: np.ndarray, stop: int) -> None:
        rows = slice(0, stop - start)
        labels[start:stop] = _postprocess(total[:, rows] / np.maximum(count[rows], 1), lut)

    current_row, total, count, z0 = -1, None, None, 0
    with torch.inference_mode():
        for row, (z, nz, y, ny, x, nx), probabilities in _windows(
            net, volume, window_side, overlap, device, pad_value
        ):
            if row != current_row:  # a new row of z-tiles: rows above z are final
                if total is not None:
                    pending = (z0, total, count)
                z0, z1 = z, min(z + nz, shape[0])
                total = np.zeros((net.n_classes, z1 - z0, *shape[1:]), dtype=np.float32)
                count = np.zeros((z1 - z0, *shape[1:]), dtype=np.float32)
                if pending is not None:
                    p0, p_total, p_count = pending
                    shared = p0 + p_count.shape[0] - z0
                    if shared > 0:
                        total[:, :shared] += p_total[:, z0 - p0 :]
                        count[:shared] += p_count[z0 - p0 :]
                    finish(p0, p_total, p_count, z0)
                    pending = None
                current_row = row
            dz, dy, dx = (
                min(n, size - s) for s, n, size in zip((z, y, x), (nz, ny, nx), shape, strict=True)
            )
            total[:, z - z0 : z - z0 + dz, y : y + dy, x : x + dx] += probabilities[
                :, :dz, :dy, :dx
            ]
            count[z - z0 : z - z0 + dz, y : y + dy, x : x + dx] += 1
    if total is not None:
        finish(z0, total, count, z0 + count.shape[0])
    return labels


class OrganSegmenter:
    """A loaded organ model (sha256 checked) on its device; `segment` is stateless, so one
    segmenter may serve several threads in turn."""

    def __init__(
        self,
        spec_path: Path,
        device: str = "auto",
        overlap: float = DEFAULT_OVERLAP,
        window_side: int | None = None,
    ):
        self.device = pick_device(device)
        if self.device.type == "cuda":
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        self.net, self.spec = load_model(Path(spec_path), self.device)
        self.overlap = overlap
        self.window_side = window_side or default_window_side(self.spec)
        if not is_valid_input_side(self.window_side):
            raise ValueError(f"window side {self.window_side} is not 92 + 8k")
        tile_plan(1, output_side(self.window_side), overlap)  # checks overlap at once

    def segment(self, ct: sitk.Image) -> OrganResult:
        start = time.perf_counter()
        spec = self.spec
        low, high = spec.hu_clip
        grid = model_grid(ct, spec.spacing_mm, pad_hu=low)
        volume = sitk.GetArrayViewFromImage(grid).astype(np.float32)  # (z, y, x)
        np.clip(volume, low, high, out=volume)
        labels = predict_labels(
            self.net, volume, self.window_side, spec.label_values, self.overlap, self.device, low
        )
        del volume
        on_model_grid = sitk.GetImageFromArray(labels)
        on_model_grid.CopyInformation(grid)
        del grid
        on_ct = sitk.Resample(
            on_model_grid, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
        )
        counts = np.bincount(sitk.GetArrayViewFromImage(on_ct).ravel(), minlength=256)
        voxel_ml = float(np.prod(ct.GetSpacing())) / 1000.0
        volumes = {
            Label(value).name.lower(): float(counts[value]) * voxel_ml
            for value in spec.label_values
        }
        return OrganResult(
            labels=on_ct,
            volumes_ml=volumes,
            spec=spec,
            seconds=time.perf_counter() - start,
            device=str(self.device),
            model_grid={
                "size_zyx": list(labels.shape),
                "spacing_zyx_mm": list(spec.spacing_mm),
            },
        )


# --- the heart check the calcium pipeline uses ------------------------------------------------

MIN_HEART_ML = 150.0  # an adult heart is 500-1000 ml with its chambers; a sliver is not a heart
MAX_END_FRACTION = 0.5  # cut: an end slice holds over half the heart's largest cross-section


@dataclass
class HeartCheck:
    in_field_of_view: bool
    heart_ml: float
    end_fraction: float  # largest heart area on the first or last slice / largest heart area
    reason: str


def heart_check(result: OrganResult | sitk.Image) -> HeartCheck:
    """Is the whole heart in the scan? Needs a heart of at least MIN_HEART_ML, and the scan must
    not cut through it: the heart's area on the first and on the last slice (along the CT's
    slice axis, array axis 0) must each be at most MAX_END_FRACTION of its largest area on any
    slice. A scan that ends at the apex or just above the heart touches it with a small cap
    and passes; one that ends mid-ventricle does not. A model without a heart channel gives no
    evidence either way, and the check passes with that reason."""
    labels = result.labels if isinstance(result, OrganResult) else result
    if isinstance(result, OrganResult) and int(Label.HEART) not in result.spec.label_values:
        return HeartCheck(True, 0.0, 0.0, f"model {result.spec.name} has no heart channel")
    heart = sitk.GetArrayViewFromImage(labels) == int(Label.HEART)
    areas = heart.reshape(heart.shape[0], -1).sum(axis=1)
    heart_ml = float(areas.sum()) * float(np.prod(labels.GetSpacing())) / 1000.0
    if heart_ml < MIN_HEART_ML:
        return HeartCheck(False, heart_ml, 0.0, f"heart {heart_ml:.0f} ml < {MIN_HEART_ML:.0f} ml")
    end_fraction = float(max(areas[0], areas[-1]) / areas.max())
    if end_fraction > MAX_END_FRACTION:
        return HeartCheck(
            False,
            heart_ml,
            end_fraction,
            f"the scan cuts the heart (an end slice holds {end_fraction:.0%} of its largest area)",
        )
    return HeartCheck(True, heart_ml, end_fraction, "heart inside the scan")


def heart_in_field_of_view(result: OrganResult | sitk.Image) -> bool:
    """True when the segmented heart is present and not cut by the scan's ends (heart_check)."""
    return heart_check(result).in_field_of_view
