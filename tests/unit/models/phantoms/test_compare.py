"""CT-number measurement of models/phantoms/compare.py: threshold rules on a synthetic slab
with known tissues, and (when the shared real data is present) on the real soft-kernel scan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.phantoms.compare import (
    REAL_BLOOD_ROI_XY_MM,
    REAL_BLOOD_ROI_Z_MM,
    REAL_HEART_Z_MM,
    fixed_centres,
    main,
    measure_hu,
    read_series,
    roi_mask,
    volume_from_image,
)

REAL = Path(__file__).resolve().parents[5] / "shared/data/real/lung_pet_ct_dx_A0001"
SOFT = REAL / "series_soft_kernel"

TRUE_HU = {"lung": -850.0, "fat": -100.0, "soft tissue": 50.0, "blood": 30.0, "bone": 700.0}


def synthetic_chest(shape=(4, 120, 140)) -> tuple[np.ndarray, np.ndarray]:
    """Air around an elliptic body (1 mm pixels): a fat layer, muscle, two lungs, a bone disc, a
    blood-filled vessel, and a dense table under the body that must not count as bone.
    Returns (hu, blood ROI mask)."""
    _, rows, cols = shape
    y, x = np.mgrid[0:rows, 0:cols].astype(float)
    cy, cx = 55.0, 70.0

    def ellipse(a: float, b: float, x0: float = cx, y0: float = cy) -> np.ndarray:
        return ((x - x0) / a) ** 2 + ((y - y0) / b) ** 2 <= 1.0

    plane = np.full((rows, cols), -1000.0)
    plane[ellipse(62, 42)] = TRUE_HU["fat"]  # 10 mm subcutaneous fat
    plane[ellipse(52, 32)] = TRUE_HU["soft tissue"]  # muscle and mediastinum
    plane[ellipse(18, 20, cx - 26, cy - 2)] = TRUE_HU["lung"]
    plane[ellipse(18, 20, cx + 26, cy - 2)] = TRUE_HU["lung"]
    plane[ellipse(6, 6, cx, cy + 22)] = TRUE_HU["bone"]  # vertebral body
    vessel = ellipse(7, 7, cx, cy + 5)
    plane[vessel] = TRUE_HU["blood"]
    plane[101:106, 20:120] = 250.0  # table top, 4 mm of air below the skin
    hu = np.repeat(plane[None], shape[0], axis=0)
    roi = np.repeat(ellipse(4, 4, cx, cy + 5)[None], shape[0], axis=0)
    return hu.astype(np.float32), roi


def test_measure_hu_finds_each_tissue_by_its_rule():
    hu, roi = synthetic_chest()
    result = measure_hu(hu, roi, pixel_mm=1.0)
    for tissue, value in TRUE_HU.items():
        assert result[tissue]["median"] == pytest.approx(value), tissue
        assert result[tissue]["n"] > 0, tissue
    # Only the vertebral disc counts as bone: the table is outside the body.
    assert result["bone"]["n"] == int((hu >= 200).sum() - (hu[:, 101:106, 20:120] >= 200).sum())
    assert result["noise_sd"] == pytest.approx(0.0)
    assert result["slice_to_slice_sd"] == pytest.approx(0.0)


def test_measure_hu_with_noise_recovers_medians_and_noise_sd():
    hu, roi = synthetic_chest()
    rng = np.random.default_rng(7)
    noisy = hu + rng.normal(0.0, 10.0, hu.shape).astype(np.float32)
    result = measure_hu(noisy, roi, pixel_mm=1.0)
    for tissue, value in TRUE_HU.items():
        assert result[tissue]["median"] == pytest.approx(value, abs=4.0), tissue
    assert result["noise_sd"] == pytest.approx(10.0, abs=1.5)
    assert len(result["blood_slice_means"]) == hu.shape[0]


@pytest.mark.skipif(not SOFT.is_dir(), reason=f"shared real CT data absent ({SOFT})")
def test_real_soft_kernel_scan_has_plausible_ct_numbers():
    image, meta = read_series(SOFT)
    assert meta["kvp"] == "120"
    real = volume_from_image(image).z_slab(*REAL_HEART_Z_MM)
    centres = fixed_centres(real, REAL_BLOOD_ROI_XY_MM, REAL_BLOOD_ROI_Z_MM)
    assert len(centres) == 7
    result = measure_hu(real.hu, roi_mask(real, centres, 6.0), real.pixel_mm[0])
    assert -900 < result["lung"]["median"] < -780
    assert -130 < result["fat"]["median"] < -70
    assert 20 < result["soft tissue"]["median"] < 60
    assert 200 < result["bone"]["median"] < 600
    # The fixed ROI sits in the aortic lumen on every slice: blood-like means, little spread.
    assert all(0 < m < 60 for m in result["blood_slice_means"])
    assert result["noise_sd"] < 15


@pytest.mark.skipif(not SOFT.is_dir(), reason=f"shared real CT data absent ({SOFT})")
def test_compare_cli_writes_montage_and_tables(tmp_path, capsys):
    assert main(["--real", str(SOFT), "--out", str(tmp_path), "--seed", "0"]) == 0
    assert "phantom seed 0" in capsys.readouterr().out
    report = json.loads((tmp_path / "hu_table.json").read_text())
    assert report["seed"] == 0
    assert set(report["phantom"]) >= set(TRUE_HU)
    assert (tmp_path / "montage.png").stat().st_size < 1_000_000
    assert (
        "| tissue | phantom median HU | real median HU | rule |"
        in (tmp_path / "hu_table.md").read_text()
    )
