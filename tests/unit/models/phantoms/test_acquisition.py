"""Phantom acquisitions: sampled ranges, noise level and slice profile."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from models.labels import Label
from models.phantoms.acquisition import KVP_CHOICES, PROTOCOLS, sample_acquisition
from models.phantoms.anatomy import sample_patient
from models.phantoms.case import CaseOptions, generate_case


def test_noise_level_matches_the_protocol() -> None:
    case = generate_case(3, 0, CaseOptions(matrix=512, protocol=(5.0, 5.0)))
    liver = ndimage.binary_erosion(case.labels == Label.LIVER, iterations=4)
    if liver.sum() < 2000:  # this seed's liver dome must be in the field
        pytest.fail("test case has no liver interior to measure noise in")
    measured = float(case.image[liver].std())
    assert measured == pytest.approx(case.acquisition.noise_sd_hu, rel=0.2)


def test_sampled_acquisitions_cover_the_required_ranges() -> None:
    seen = {"position": set(), "sharp": set(), "kvp": set(), "protocol": set()}
    for seed in range(300):
        rng = np.random.default_rng(seed)
        width = float(rng.uniform(260, 440))
        kvp = float(rng.choice(KVP_CHOICES))
        patient = sample_patient(rng, width, kvp)
        low, high = patient.heart_bounds(margin=3.0)
        acq = sample_acquisition(rng, width, low, high, patient.centre_xy, kvp)
        assert 0.5 <= acq.pixel_spacing_mm <= 0.98
        coverage = (acq.n_slices - 1) * acq.slice_increment_mm
        assert 150 - acq.slice_increment_mm <= coverage <= 350 + acq.slice_increment_mm
        z_last = acq.z_first + coverage
        assert acq.z_first <= low[2] and z_last >= high[2], "the whole heart is scanned"
        half_fov = acq.matrix * acq.pixel_spacing_mm / 2
        assert np.all(np.abs(low[:2] - acq.recon_centre_xy) < half_fov)
        assert np.all(np.abs(high[:2] - acq.recon_centre_xy) < half_fov)
        assert 8 <= acq.noise_sd_hu <= 40
        assert 0.625 <= acq.slice_increment_mm <= acq.slice_thickness_mm <= 5.0
        offset = np.subtract(acq.recon_centre_xy, patient.centre_xy)
        assert np.all(np.abs(offset) <= 30 + 1e-9) or acq.pixel_spacing_mm < 0.75
        seen["position"].add(acq.patient_position)
        seen["sharp"].add(acq.sharp_kernel)
        seen["kvp"].add(acq.kvp)
        seen["protocol"].add((acq.slice_thickness_mm, acq.slice_increment_mm))
    assert seen["position"] == {"HFS", "FFS"}
    assert seen["sharp"] == {True, False}
    assert seen["kvp"] == set(KVP_CHOICES)
    assert seen["protocol"] == set(PROTOCOLS)
    assert any(t > i for t, i in seen["protocol"]), "overlapping reconstructions are sampled"


def test_slice_profile_matches_a_gaussian_filter_with_nearest_edges() -> None:
    from dataclasses import replace

    from models.phantoms.acquisition import slice_profile_blur

    case = generate_case(1, 0, CaseOptions(matrix=64, protocol=(5.0, 2.5), n_slices=70))
    acq = replace(case.acquisition, slice_thickness_mm=5.0, slice_increment_mm=2.5)
    volume = np.random.default_rng(1).standard_normal((12, 16, 16)).astype(np.float32)
    sigma = 5.0 / 2.355 / 2.5
    expected = ndimage.gaussian_filter1d(volume, sigma, axis=0, mode="nearest", truncate=3)
    assert np.abs(slice_profile_blur(volume, acq) - expected).max() < 1e-5
