"""Organ inference: tiling, published post-processing, geometry, orientation, heart check.

The networks here have random weights (a tiny width, the head scaled so that probabilities
are decisive and several structures appear): what is checked is the machinery around the
network, not anatomy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from models.labels import UNET_CHANNELS, Label
from models.organs import registry
from models.organs.inference import (
    OrganResult,
    OrganSegmenter,
    _postprocess,
    default_window_side,
    heart_check,
    heart_in_field_of_view,
    model_grid,
    predict_labels,
    predict_probabilities,
    tile_plan,
)
from models.organs.unet import UNet3D
from tests.unit.models.organs.test_registry import tiny_spec

LUT = [int(label) for label in UNET_CHANNELS]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def decisive_net(seed: int = 0, width: int = 1) -> UNet3D:
    torch.manual_seed(seed)
    net = UNet3D(width=width).eval()
    with torch.no_grad():
        net.head.weight.mul_(40.0)
    return net


def smooth_volume(shape, seed: int = 1) -> np.ndarray:
    """Clipped HU with structure at several scales (blurred noise), float32 (z, y, x)."""
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray(rng.normal(0, 1, shape).astype(np.float32))
    blurred = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(image, 2.0))
    return np.clip(blurred / blurred.std() * 400, -500, 400).astype(np.float32)


def write_model(folder: Path, net: UNet3D, spacing=(4.0, 4.0, 4.0), input_side=92) -> Path:
    spec = tiny_spec("m", width=net.width)
    spec.spacing_mm, spec.input_side = list(spacing), input_side
    spec_path = folder / "m.json"
    registry.save_model(net, spec, spec_path)
    return spec_path


def test_tile_plan_covers_with_aligned_starts():
    assert tile_plan(30, 44) == [(0, 36)]  # one tile, shrunk to the smallest valid length
    assert tile_plan(44, 44) == [(0, 44)]
    plan = tile_plan(100, 44)
    assert [s for s, _ in plan] == [0, 40, 80] and plan[-1] == (80, 20)
    for length in (1, 5, 45, 97, 300):
        for overlap in (0.0, 0.25, 0.5):
            plan = tile_plan(length, 44, overlap)
            assert all(s % 8 == 0 and (n - 4) % 8 == 0 and n <= 44 for s, n in plan)
            covered = np.zeros(length + 44, bool)
            for s, n in plan:
                covered[s : s + n] = True
            assert covered[:length].all()
    assert len(tile_plan(300, 44, 0.5)) > len(tile_plan(300, 44, 0.0))
    with pytest.raises(ValueError):
        tile_plan(10, 44, 1.0)


def test_sliding_windows_equal_one_big_window():
    net = decisive_net()
    volume = smooth_volume((20, 30, 29))
    single = predict_probabilities(net, volume, window_side=132)  # 44^3 output: one window
    tiled = predict_probabilities(net, volume, window_side=108)  # 20^3 tiles: 2 x 2 in y, x
    np.testing.assert_allclose(tiled, single, atol=2e-5)
    expected = _postprocess(single, np.asarray(LUT, np.uint8))
    present = set(np.unique(expected)) - {0}
    assert len(present) >= 2 and (expected == 0).any()  # a test that can tell labels apart
    for overlap in (0.0, 0.5):  # streamed rows of z-tiles, averaged overlaps: same labels
        labels = predict_labels(net, volume, 108, LUT, overlap=overlap)
        assert (labels == expected).mean() > 0.999


def test_streamed_rows_along_z_match():
    net = decisive_net(seed=2)
    volume = smooth_volume((45, 20, 20), seed=3)  # three rows of z-tiles at window 108
    assert len(tile_plan(45, 20)) == 3
    expected = _postprocess(predict_probabilities(net, volume, 132), np.asarray(LUT, np.uint8))
    assert (predict_labels(net, volume, 108, LUT, overlap=0.3) == expected).mean() > 0.999


def test_published_post_processing():
    probabilities = np.zeros((4, 3), np.float32)  # 3 foreground channels + background, 3 voxels
    probabilities[:, 0] = [0.6, 0.2, 0.1, 0.1]  # channel 0 above 0.5
    probabilities[:, 1] = [0.45, 0.1, 0.05, 0.4]  # highest foreground, but not above 0.5
    probabilities[:, 2] = [0.0, 0.0, 0.51, 0.49]  # channel 2 just above 0.5
    labels = _postprocess(probabilities, np.asarray([5, 1, 22], np.uint8))
    assert labels.tolist() == [5, 0, 22]


def ct_image(array: np.ndarray, spacing, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), origin=(0, 0, 0)):
    image = sitk.GetImageFromArray(array.astype(np.int16))
    image.SetSpacing(spacing)
    image.SetDirection([float(v) for v in direction])
    image.SetOrigin(origin)
    return image


def test_segment_returns_labels_on_the_ct_grid(tmp_path):
    spec_path = write_model(tmp_path, decisive_net(seed=4))
    array = smooth_volume((14, 48, 52), seed=5)
    ct = ct_image(array, (1.7, 1.9, 5.0), (-1, 0, 0, 0, 1, 0, 0, 0, -1), (10.0, -20.0, 300.0))
    segmenter = OrganSegmenter(spec_path, device="cpu")
    result = segmenter.segment(ct)
    labels = result.labels
    assert labels.GetPixelID() == sitk.sitkUInt8
    assert labels.GetSize() == ct.GetSize() and labels.GetSpacing() == ct.GetSpacing()
    assert labels.GetOrigin() == ct.GetOrigin() and labels.GetDirection() == ct.GetDirection()
    values = sitk.GetArrayFromImage(labels)
    assert set(np.unique(values)) <= {0, *LUT} and len(np.unique(values)) >= 2
    assert list(result.volumes_ml) == [label.name.lower() for label in UNET_CHANNELS]
    voxel_ml = 1.7 * 1.9 * 5.0 / 1000
    assert sum(result.volumes_ml.values()) == pytest.approx((values > 0).sum() * voxel_ml)
    assert result.spec.name == "m" and result.device == "cpu" and result.seconds > 0
    # The model saw an LPS grid at its own spacing covering the scan.
    assert result.model_grid["spacing_zyx_mm"] == [4.0, 4.0, 4.0]
    assert result.model_grid["size_zyx"] == [17, 23, 22]  # 65, 89.3, 86.7 mm extents
    # Deterministic: the same scan gives the same labels.
    again = sitk.GetArrayFromImage(segmenter.segment(ct).labels)
    assert np.array_equal(values, again)


def test_orientation_does_not_change_the_segmentation(tmp_path):
    """The same patient stored head first and feet first (rows and slices reversed, direction
    flipped to match) is segmented identically, voxel for voxel in the patient."""
    spec_path = write_model(tmp_path, decisive_net(seed=6))
    array = smooth_volume((12, 40, 44), seed=7)
    # Spacings whose voxel centres never fall halfway between model voxels: at such ties the
    # nearest-neighbour choice is arbitrary and rounding can go either way.
    spacing = (1.7, 1.9, 3.3)
    hfs = ct_image(array, spacing)
    # Reversed columns and slices; origin = the world position of the new first voxel.
    origin = hfs.TransformIndexToPhysicalPoint((43, 0, 11))
    ffs = ct_image(array[::-1, :, ::-1], spacing, (-1, 0, 0, 0, 1, 0, 0, 0, -1), origin)
    segmenter = OrganSegmenter(spec_path, device="cpu")
    a = sitk.GetArrayFromImage(segmenter.segment(hfs).labels)
    b = sitk.GetArrayFromImage(segmenter.segment(ffs).labels)[::-1, :, ::-1]
    assert (a == b).mean() > 0.999 and len(np.unique(a)) >= 2


def test_model_grid_pads_with_the_clip_floor_and_antialiases():
    ct = ct_image(np.full((10, 30, 30), 100), (0.5, 0.5, 1.0))
    grid = model_grid(ct, [4.0, 4.0, 4.0], pad_hu=-500)
    assert grid.GetSpacing() == (4.0, 4.0, 4.0) and grid.GetDirection() == tuple(np.eye(3).ravel())
    assert grid.GetSize() == (4, 4, 3)
    assert np.allclose(sitk.GetArrayFromImage(grid), 100, atol=1e-3)  # smoothing keeps levels
    rotated = ct_image(np.full((10, 30, 30), 100), (1.0, 1.0, 1.0), (0, 1, 0, 1, 0, 0, 0, 0, -1))
    assert model_grid(rotated, [2.0, 2.0, 2.0], -500).GetSize() == (15, 15, 5)


def test_window_side_grows_for_narrow_networks_only():
    spec = tiny_spec("w")
    spec.input_side = 132
    spec.width = 8
    assert default_window_side(spec) == 180
    spec.width = 32
    assert default_window_side(spec) == 132  # the published width keeps its cube


def heart_labels(z_range: tuple[int, int], n_slices: int = 40, radius: float = 50.0) -> sitk.Image:
    """An ellipsoid heart over the given slice range, `radius` mm in plane, on a 2 mm grid."""
    z, y, x = np.mgrid[:n_slices, :64, :64]
    centre = (z_range[0] + z_range[1]) / 2
    half = (z_range[1] - z_range[0]) / 2
    inside = ((z - centre) / half) ** 2 + ((y - 32) ** 2 + (x - 32) ** 2) / (radius / 2) ** 2 <= 1
    image = sitk.GetImageFromArray(np.where(inside, int(Label.HEART), 0).astype(np.uint8))
    image.SetSpacing((2.0, 2.0, 2.0))
    return image


def test_heart_check():
    whole = heart_check(heart_labels((8, 32)))
    assert whole.in_field_of_view and whole.heart_ml > 150 and whole.end_fraction == 0
    cut = heart_check(heart_labels((-12, 20)))  # the scan starts mid-heart
    assert not cut.in_field_of_view and cut.end_fraction > 0.5 and "cuts" in cut.reason
    cap = heart_check(heart_labels((-1, 30)))  # touches the first slice with a small cap
    assert cap.in_field_of_view and 0 < cap.end_fraction < 0.5
    small = heart_check(heart_labels((18, 22), radius=8))
    assert not small.in_field_of_view and "ml" in small.reason
    assert heart_in_field_of_view(heart_labels((8, 32)))
    empty = sitk.Image(10, 10, 10, sitk.sitkUInt8)
    assert not heart_in_field_of_view(empty)


def test_heart_check_of_a_model_without_heart_gives_no_flag():
    spec = tiny_spec("lungs")
    spec.n_classes, spec.channels, spec.label_values = 2, ["left_lung", "background"], [9]
    result = OrganResult(sitk.Image(8, 8, 8, sitk.sitkUInt8), {}, spec, 0.0, "cpu")
    assert heart_in_field_of_view(result)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_gives_the_cpu_labels(tmp_path):
    spec_path = write_model(tmp_path, decisive_net(seed=8, width=4))
    ct = ct_image(smooth_volume((20, 60, 60), seed=9), (1.5, 1.5, 3.0))
    on_cpu = OrganSegmenter(spec_path, device="cpu").segment(ct)
    on_gpu = OrganSegmenter(spec_path, device="auto").segment(ct)
    assert on_gpu.device.startswith("cuda")
    a, b = (sitk.GetArrayFromImage(r.labels) for r in (on_cpu, on_gpu))
    assert (a == b).mean() > 0.999
