"""Benchmark of the reference Agatston calculator on a full-size chest-CT-like volume.

Builds a 512 x 512 x 100 int16 volume: N(0, 30) HU noise, a bone-like region (a vertebral body,
a sternum and a ring of ribs, HU 200-1000, a few % of all voxels, labelled as bone and NOT as
coronary calcium) and 50 calcified lesions of radius 1-4 px with peaks 130-1000 HU inside a
200 x 200 x 60 'heart' box, labelled 40-43. Runs `agatston` 5 times and prints the median and
max wall time.

This test prints figures and never asserts on wall time (the target is under 0.2 s per call);
it only asserts correctness properties (lesions found, bone not counted).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest

from models.agatston import agatston
from models.labels import Label

SHAPE = (100, 512, 512)  # z, y, x
SPACING_ZYX = (1.0, 0.7, 0.7)
N_LESIONS = 50
REPEATS = 5
HEART_BOX = (slice(20, 80), slice(150, 350), slice(156, 356))  # 60 x 200 x 200
CAC_LABELS = (
    int(Label.CAC_LEFT_MAIN),
    int(Label.CAC_LAD),
    int(Label.CAC_LCX),
    int(Label.CAC_RCA),
)


def _build_volume(seed: int = 0):
    rng = np.random.default_rng(seed)
    hu = rng.normal(0.0, 30.0, SHAPE).astype(np.int16)
    labels = np.zeros(SHAPE, dtype=np.uint8)

    # Bone-like structures through every slice, HU 200-1000, never coronary-labelled.
    yy, xx = np.mgrid[0 : SHAPE[1], 0 : SHAPE[2]]
    vertebra = (yy - 420) ** 2 + (xx - 256) ** 2 <= 45**2
    sternum = (np.abs(yy - 90) <= 12) & (np.abs(xx - 256) <= 25)
    radius = np.hypot((yy - 256) / 230.0, (xx - 256) / 240.0)
    angle = np.arctan2(yy - 256, xx - 256)
    ribs = (np.abs(radius - 0.95) <= 0.03) & (np.cos(8 * angle) > 0.3)
    for mask, label in (
        (vertebra, Label.VERTEBRAE),
        (sternum, Label.STERNUM),
        (ribs, Label.RIBS),
    ):
        n = int(mask.sum())
        hu[:, mask] = rng.integers(200, 1001, size=(SHAPE[0], n), dtype=np.int16)
        labels[:, mask] = int(label)

    # Heart box, then 50 well-separated spherical lesions inside it.
    labels[HEART_BOX] = int(Label.HEART)
    z0, y0, x0 = (s.start for s in HEART_BOX)
    z1, y1, x1 = (s.stop for s in HEART_BOX)
    centres: list[np.ndarray] = []
    while len(centres) < N_LESIONS:
        c = np.array(
            [
                rng.integers(z0 + 5, z1 - 5),
                rng.integers(y0 + 5, y1 - 5),
                rng.integers(x0 + 5, x1 - 5),
            ]
        )
        if all(np.abs(c - o).max() > 10 for o in centres):
            centres.append(c)
    gz, gy, gx = np.mgrid[-5:6, -5:6, -5:6]
    distance = np.sqrt(gz**2 + gy**2 + gx**2)
    for i, (cz, cy, cx) in enumerate(centres):
        r = int(rng.integers(1, 5))  # radius 1-4 px
        peak = int(rng.integers(130, 1001))
        window = (slice(cz - 5, cz + 6), slice(cy - 5, cy + 6), slice(cx - 5, cx + 6))
        # Label one voxel wider than the calcium (as a segmentation would be), HU falling from
        # the peak at the centre to 130 at the rim.
        labels[window][distance <= r + 1] = CAC_LABELS[i % 4]
        inside = distance <= r
        profile = 130 + (peak - 130) * (1.0 - distance / (r + 1))
        hu[window][inside] = np.maximum(profile[inside], 130).astype(np.int16)
    bone_fraction = float((vertebra | sternum | ribs).mean())
    return hu, labels, bone_fraction


@pytest.mark.bench
def test_bench_agatston(capsys):
    hu, labels, bone_fraction = _build_volume()
    assert 0.01 < bone_fraction < 0.10  # "a few %" of the voxels are bone-like

    times = []
    result = None
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = agatston(hu, labels, SPACING_ZYX, calibration_mg_per_cm3_per_hu=0.8)
        times.append(time.perf_counter() - start)

    with capsys.disabled():
        print(
            f"\nagatston 512x512x100 int16, bone {bone_fraction:.1%} of voxels, "
            f"{N_LESIONS} lesions: median {statistics.median(times):.3f} s, "
            f"max {max(times):.3f} s over {REPEATS} runs "
            f"(total {result.total:.1f}, {len(result.lesions)} lesions found)"
        )

    # Correctness only, never time.
    assert result.total > 0
    assert len(result.lesions) >= 40
    assert len(result.lesions) <= N_LESIONS  # bone and noise never produce lesions
    assert all(lesion.artery in ("LAD", "LCX", "RCA") for lesion in result.lesions)
    assert all(130 <= lesion.peak_hu <= 1000 for lesion in result.lesions)
    for lesion in result.lesions:  # every lesion sits inside the heart box
        z, y, x = lesion.centroid_zyx
        assert HEART_BOX[0].start <= z < HEART_BOX[0].stop
        assert HEART_BOX[1].start <= y < HEART_BOX[1].stop
        assert HEART_BOX[2].start <= x < HEART_BOX[2].stop
