"""Resolution and noise of the reconstruction.

Resolution: an in-plane point-spread function per kernel, a Gaussian for soft kernels and a
Gaussian with a negative wider lobe for sharp ones (the edge overshoot of bone and lung
kernels). Applied to the anatomy in the frequency domain and, identically, to each
calcification's small box in the spatial domain (the two are the same linear filter).

Noise: white Gaussian noise shaped by a filtered-backprojection noise power spectrum,
NPS(f) ~ f exp(-f^2 / 2 s^2) (the ramp filter times the kernel's apodisation; the peak s lies
near 0.2 cycles/mm for soft and 0.5 for sharp kernels, Boedeker et al., Phys Med Biol 2007),
scaled to the acquisition's standard deviation, and correlated between overlapping slices.
"""

from __future__ import annotations

import numpy as np
from scipy import fft, ndimage

# (sigma of the main lobe, sigma of the negative lobe, weight of the negative lobe), mm.
PSF = {"soft": (0.55, 1.0, 0.0), "sharp": (0.3, 1.0, 0.25)}
NPS_PEAK = {"soft": (0.17, 0.26), "sharp": (0.42, 0.62)}  # cycles/mm, sampled per case


def mtf(fy: np.ndarray, fx: np.ndarray, kernel: str) -> np.ndarray:
    s1, s2, gamma = PSF[kernel]
    f2 = fy**2 + fx**2
    return (1 + gamma) * np.exp(-2 * np.pi**2 * s1**2 * f2) - gamma * np.exp(
        -2 * np.pi**2 * s2**2 * f2
    )


def blur_box(box: np.ndarray, pixel_mm: float, kernel: str) -> np.ndarray:
    """The kernel's in-plane PSF applied to a (z, y, x) box (zero-padded by the caller)."""
    s1, s2, gamma = PSF[kernel]
    out = ndimage.gaussian_filter(box, (0, s1 / pixel_mm, s1 / pixel_mm), mode="constant")
    if gamma:
        wide = ndimage.gaussian_filter(box, (0, s2 / pixel_mm, s2 / pixel_mm), mode="constant")
        out = (1 + gamma) * out - gamma * wide
    return out


def psf_reach_px(pixel_mm: float, kernel: str) -> int:
    """Pixels a box must be padded by for blur_box to lose nothing."""
    s1, s2, gamma = PSF[kernel]
    return int(np.ceil(3.5 * (s2 if gamma else s1) / pixel_mm)) + 1


def noise_spectrum(shape_yx, pixel_mm: float, peak: float) -> tuple[np.ndarray, float]:
    """Amplitude filter on the rfft grid, and the normalisation that makes the shaped noise
    of unit variance (mean of the squared filter over the full frequency grid)."""
    fy = fft.fftfreq(shape_yx[0], d=pixel_mm)[:, None]
    fx_full = fft.fftfreq(shape_yx[1], d=pixel_mm)[None, :]
    fx = fft.rfftfreq(shape_yx[1], d=pixel_mm)[None, :]

    def amplitude(fx_):
        f = np.sqrt(fy**2 + fx_**2)
        return np.sqrt(f * np.exp(-(f**2) / (2 * peak**2)))

    norm = float(np.sqrt(np.mean(amplitude(fx_full) ** 2)))
    return (amplitude(fx) / norm).astype(np.float32), norm


def reconstruct(
    anatomy: np.ndarray,
    pixel_mm: float,
    kernel: str,
    noise_sd: float,
    slice_correlation: float,
    rng: np.random.Generator,
    chunk: int = 16,
) -> np.ndarray:
    """anatomy (z, y, x) float32 -> blurred by the kernel's PSF plus shaped noise, float32.

    slice_correlation c in [0, 0.5): noise of slice k mixes c of its neighbours' (overlapping
    reconstructions share projections), renormalised to keep the standard deviation.
    """
    nz, ny, nx = anatomy.shape
    fy = fft.fftfreq(ny, d=pixel_mm)[:, None]
    fx = fft.rfftfreq(nx, d=pixel_mm)[None, :]
    transfer = mtf(fy, fx, kernel).astype(np.float32)
    peak = rng.uniform(*NPS_PEAK[kernel])
    shaping, _ = noise_spectrum((ny, nx), pixel_mm, peak)
    # Unit-variance complex white noise on the half spectrum, one plane per slice plus one on
    # each side, drawn chunk by chunk in slice order (the same planes whatever the chunk size).
    half = (ny, nx // 2 + 1)
    scale = np.float32(np.sqrt(0.5))
    mix = np.float32(slice_correlation)
    renorm = np.float32(noise_sd / np.sqrt(1 + 2 * slice_correlation**2))

    def planes(count: int) -> np.ndarray:
        re = rng.standard_normal((count, *half), dtype=np.float32)
        im = rng.standard_normal((count, *half), dtype=np.float32)
        return (re + 1j * im) * scale

    shaping = shaping * renorm
    carry = planes(2)  # the two planes before the current chunk's first slice
    out = np.empty_like(anatomy)
    for start in range(0, nz, chunk):
        stop = min(start + chunk, nz)
        white = np.concatenate([carry, planes(stop - start)])
        noise = white[1:-1].copy()
        if mix:
            noise += mix * (white[:-2] + white[2:])
        carry = white[-2:]
        spectrum = fft.rfft2(anatomy[start:stop], norm="ortho", workers=1)
        spectrum *= transfer
        noise *= shaping
        spectrum += noise
        out[start:stop] = fft.irfft2(spectrum, s=(ny, nx), norm="ortho", workers=1)
    return out


def blur_only(volume: np.ndarray, pixel_mm: float, kernel: str, chunk: int = 16) -> np.ndarray:
    """The PSF alone (for an image difference such as the contrast agent's)."""
    nz, ny, nx = volume.shape
    fy = fft.fftfreq(ny, d=pixel_mm)[:, None]
    fx = fft.rfftfreq(nx, d=pixel_mm)[None, :]
    transfer = mtf(fy, fx, kernel).astype(np.float32)
    out = np.empty_like(volume)
    for start in range(0, nz, chunk):
        part = slice(start, min(start + chunk, nz))
        out[part] = fft.irfft2(
            fft.rfft2(volume[part], norm="ortho", workers=1) * transfer, s=(ny, nx),
            norm="ortho", workers=1,
        )  # fmt: skip
    return out
