"""The heart search (models/calcium/heart_search.py) on volumes whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from models.calcium.heart_search import SEARCH_RADIUS_VOX, HeartSearch

SIZE = 80


def chest(centre_zyx=(40, 40, 40)) -> tuple[np.ndarray, np.ndarray]:
    """A smooth chest-like volume (registration units): a soft-tissue body with two lungs and
    a heart (surrounded by fat) at `centre_zyx`, and the heart's mask."""
    z, y, x = np.mgrid[:SIZE, :SIZE, :SIZE].astype(np.float64)
    volume = np.full((SIZE,) * 3, -1.0)
    volume[((y - 40) / 28) ** 2 + ((x - 40) / 34) ** 2 <= 1] = 0.0  # body
    for side in (-1, 1):
        lung = ((y - 40) / 20) ** 2 + ((x - 40 - side * 16) / 12) ** 2 + ((z - 40) / 30) ** 2 <= 1
        volume[lung] = -0.8
    cz, cy, cx = centre_zyx
    ellipsoid = ((z - cz) / 9) ** 2 + ((y - cy) / 8) ** 2 + ((x - cx) / 7) ** 2
    volume[ellipsoid <= 1.4] = -0.1  # epicardial fat
    heart = ellipsoid <= 1
    volume[heart] = 0.05
    smooth = ndimage.gaussian_filter(volume, 1.5).astype(np.float32)
    return smooth, heart.astype(np.float32)


@pytest.mark.parametrize("shift_xyz", [(0.0, 0.0, 0.0), (5.0, -3.0, 2.0), (-6.0, 4.0, -7.0)])
def test_search_finds_a_chest_moved_within_its_range(shift_xyz) -> None:
    atlas, atlas_heart = chest()
    scan = ndimage.shift(atlas, shift_xyz[::-1], order=1, mode="nearest")
    search = HeartSearch(atlas, atlas_heart, torch.device("cpu"))
    found, correlation = search(torch.from_numpy(scan)[None, None])
    assert np.allclose(found, shift_xyz, atol=0.5), found
    assert correlation > 0.9


def test_sub_voxel_shift_is_interpolated() -> None:
    atlas, atlas_heart = chest()
    scan = ndimage.shift(atlas, (0.0, 0.0, 2.5), order=1, mode="nearest")  # x by 2.5 voxels
    search = HeartSearch(atlas, atlas_heart, torch.device("cpu"))
    found, _ = search(torch.from_numpy(scan)[None, None])
    assert abs(found[0] - 2.5) < 0.3, found
    assert np.allclose(found[1:], 0.0, atol=0.3), found


def test_search_follows_the_heart_not_the_lungs() -> None:
    """Only the heart moves (4 voxels in x); body and lungs stay where the atlas has them. The
    weighted region also holds the heart's surroundings, which stay, so the search goes more
    than half of the way, not all of it (2.3 voxels when written)."""
    atlas, atlas_heart = chest()
    scan, _ = chest((40, 40, 44))
    search = HeartSearch(atlas, atlas_heart, torch.device("cpu"))
    found, _ = search(torch.from_numpy(scan)[None, None])
    assert 2.0 <= found[0] <= 4.5, found


def test_search_stays_within_its_radius() -> None:
    atlas, atlas_heart = chest()
    scan = ndimage.shift(atlas, (0.0, 0.0, SEARCH_RADIUS_VOX + 4), order=1, mode="nearest")
    search = HeartSearch(atlas, atlas_heart, torch.device("cpu"))
    found, _ = search(torch.from_numpy(scan)[None, None])
    assert found[0] == SEARCH_RADIUS_VOX  # the edge of the range, no extrapolation


def test_a_narrower_search_finds_a_near_shift_and_stops_at_its_own_radius() -> None:
    atlas, atlas_heart = chest()
    search = HeartSearch(atlas, atlas_heart, torch.device("cpu"), radius_vox=3)
    near = ndimage.shift(atlas, (0.0, 0.0, 2.0), order=1, mode="nearest")
    found, _ = search(torch.from_numpy(near)[None, None])
    assert abs(found[0] - 2.0) < 0.5 and np.abs(found[1:]).max() < 0.5
    far = ndimage.shift(atlas, (0.0, 0.0, 6.0), order=1, mode="nearest")
    found, _ = search(torch.from_numpy(far)[None, None])
    assert found[0] == 3  # a structure farther away than the radius is not reached


def test_the_scorer_takes_the_search_radius_from_the_manifest(tmp_path) -> None:
    import json
    import shutil

    from models.calcium.inference import WEIGHTS_DIR, CalciumScorer

    weights = tmp_path / "weights"
    shutil.copytree(WEIGHTS_DIR, weights)
    manifest = json.loads((weights / "calcium_manifest.json").read_text())
    manifest["registration"].update(heart_search=True, heart_search_radius_mm=15)
    (weights / "calcium_manifest.json").write_text(json.dumps(manifest))
    assert CalciumScorer(weights, device="cpu").heart_search.radius == 3
    del manifest["registration"]["heart_search_radius_mm"]  # an older manifest: +-40 mm
    (weights / "calcium_manifest.json").write_text(json.dumps(manifest))
    assert CalciumScorer(weights, device="cpu").heart_search.radius == SEARCH_RADIUS_VOX
