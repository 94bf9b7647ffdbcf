"""How the phantom is scanned: protocol sampling, image grid, blur and noise.

The image chain follows a real scanner's in order: the object (painted with partial volume)
is seen through the slice sensitivity profile (z) and the reconstruction kernel's point spread
function (x, y; sharp kernels also overshoot at edges), then correlated noise whose texture
follows the kernel (soft: blotchy, low frequency; sharp: fine grain) is added.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.fft as sfft

from models.phantoms.geometry import Grid

# (manufacturer, model, soft kernels, sharp kernels, pixel representation)
SCANNERS = (
    ("SIEMENS", "SOMATOM Definition AS", ("B30f", "B31f", "Br36"), ("B70f", "B60f", "Br64"), 0),
    ("GE MEDICAL SYSTEMS", "LightSpeed VCT", ("STANDARD", "SOFT"), ("LUNG", "BONE"), 1),
    ("Philips", "Brilliance 64", ("B", "C"), ("L", "YA"), 0),
    ("TOSHIBA", "Aquilion ONE", ("FC03", "FC13"), ("FC52", "FC86"), 0),
)

# (slice thickness, increment) in mm; the overlapping pairs are common for calcium scoring.
PROTOCOLS = (
    (0.625, 0.625),
    (1.0, 1.0),
    (1.25, 1.25),
    (1.25, 0.625),
    (1.5, 1.5),
    (2.0, 2.0),
    (2.0, 1.0),
    (2.5, 2.5),
    (2.5, 1.25),
    (3.0, 3.0),
    (3.0, 1.5),
    (5.0, 5.0),
    (5.0, 2.5),
)


@dataclass(frozen=True)
class Acquisition:
    manufacturer: str
    model: str
    kvp: float
    tube_current_ma: float
    kernel: str
    sharp_kernel: bool
    psf_sigma_mm: float  # in-plane point spread (Gaussian sigma)
    edge_enhancement: float  # unsharp-mask gain of sharp kernels (0 for soft)
    noise_sd_hu: float
    slice_thickness_mm: float
    slice_increment_mm: float
    pixel_spacing_mm: float
    matrix: int
    n_slices: int
    patient_position: str  # HFS or FFS
    recon_centre_xy: tuple[float, float]
    z_first: float  # lowest slice position (world z)
    pixel_representation: int

    def to_dict(self) -> dict:
        return asdict(self)

    def grid(self) -> Grid:
        spacing = (self.pixel_spacing_mm, self.pixel_spacing_mm, self.slice_increment_mm)
        row_sign = 1 if self.patient_position == "HFS" else -1
        slice_sign = row_sign  # keeps the direction matrix right-handed, as scanners do
        half = (self.matrix - 1) / 2 * self.pixel_spacing_mm
        z_last = self.z_first + (self.n_slices - 1) * self.slice_increment_mm
        origin = (
            _exact(self.recon_centre_xy[0] - row_sign * half, 64),
            _exact(self.recon_centre_xy[1] - half, 64),
            self.z_first if slice_sign > 0 else z_last,
        )
        return Grid(
            (self.n_slices, self.matrix, self.matrix), spacing, origin, row_sign, slice_sign
        )


def _exact(value: float, steps_per_mm: int) -> float:
    """Round to a binary fraction of a mm that float32 (NIfTI) and a short decimal string
    (DICOM DS) both hold exactly, so geometry and the Agatston truth survive every format."""
    return round(float(value) * steps_per_mm) / steps_per_mm


def noise_sd(
    rng: np.random.Generator, body_width: float, kvp: float, sharp: bool, thickness: float
) -> float:
    """Image noise grows with patient size, falls with kVp and slice thickness, and sharp
    kernels roughly double it; clipped to the 8-40 HU range seen on clinical chest CT."""
    sd = rng.uniform(8, 14) * (body_width / 340) ** 1.5 * (120 / kvp) ** 1.2
    sd *= np.sqrt(2.5 / thickness) ** 0.5 * (2.0 if sharp else 1.0)
    return float(np.clip(sd, 8.0, 40.0))


def sample_acquisition(
    rng: np.random.Generator,
    body_width: float,
    heart_low: np.ndarray,
    heart_high: np.ndarray,
    body_centre: np.ndarray,
    kvp: float,
    *,
    matrix: int = 512,
    protocol: tuple[float, float] | None = None,
    n_slices: int | None = None,
) -> Acquisition:
    manufacturer, model, soft, sharp_kernels, pixel_rep = SCANNERS[rng.integers(len(SCANNERS))]
    sharp = bool(rng.random() < 0.3)
    kernel = str(rng.choice(sharp_kernels if sharp else soft))
    thickness, increment = protocol or PROTOCOLS[rng.integers(len(PROTOCOLS))]

    # Field of view: usually the whole body (0.5-0.98 mm pixels on 512), sometimes a
    # heart-centred small field as in cardiac protocols, always containing the heart.
    heart_centre = 0.5 * (heart_low + heart_high)
    if rng.random() < 0.75:
        spacing = rng.uniform(min(max(0.5, (body_width + 20) / 512), 0.98), 0.98)
        centre = body_centre + rng.uniform(-30, 30, 2)
    else:
        spacing = rng.uniform(0.5, 0.7)
        centre = heart_centre[:2] + rng.uniform(-30, 30, 2)
    fov = spacing * 512
    # Keep the heart (plus 10 mm) inside the field by sliding the centre if needed.
    lo, hi = heart_low[:2] - 10 + fov / 2, heart_high[:2] + 10 - fov / 2
    centre = np.clip(centre, np.minimum(lo, hi), np.maximum(lo, hi))
    spacing = _exact(spacing * 512 / matrix, 1024)

    # z coverage 150-350 mm containing the whole heart.
    heart_extent = heart_high[2] - heart_low[2]
    if n_slices is None:
        coverage = rng.uniform(max(150.0, heart_extent + 30), 350.0)
        n_slices = int(round(coverage / increment)) + 1
    coverage = (n_slices - 1) * increment
    slack = coverage - heart_extent
    z_first = heart_low[2] - (rng.uniform(0.2, 0.8) * slack if slack > 0 else slack / 2)

    return Acquisition(
        manufacturer=manufacturer,
        model=model,
        kvp=kvp,
        tube_current_ma=float(rng.uniform(40, 300)),
        kernel=kernel,
        sharp_kernel=sharp,
        psf_sigma_mm=float(rng.uniform(0.3, 0.45) if sharp else rng.uniform(0.55, 0.85)),
        edge_enhancement=float(rng.uniform(0.3, 0.8) if sharp else 0.0),
        noise_sd_hu=noise_sd(rng, body_width, kvp, sharp, thickness),
        slice_thickness_mm=float(thickness),
        slice_increment_mm=float(increment),
        pixel_spacing_mm=float(spacing),
        matrix=int(matrix),
        n_slices=int(n_slices),
        patient_position="FFS" if rng.random() < 0.3 else "HFS",
        recon_centre_xy=(float(centre[0]), float(centre[1])),
        z_first=_exact(z_first, 64),
        pixel_representation=int(pixel_rep),
    )


EDGE_SIGMA_MM = 1.2


def kernel_transfer(shape: tuple[int, int], acq: Acquisition) -> np.ndarray:
    """In-plane modulation transfer of the reconstruction kernel on an rfft2 frequency grid:
    a Gaussian point spread, times an unsharp-mask boost for sharp kernels."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    f2 = (fy**2 + fx**2).astype(np.float32)
    px = acq.pixel_spacing_mm

    def gaussian(sigma_mm: float) -> np.ndarray:
        return np.exp(-2.0 * np.pi**2 * (sigma_mm / px) ** 2 * f2)

    transfer = gaussian(acq.psf_sigma_mm)
    if acq.edge_enhancement > 0:
        transfer *= 1.0 + acq.edge_enhancement * (1.0 - gaussian(EDGE_SIGMA_MM))
    return transfer


def in_plane_blur(array: np.ndarray, acq: Acquisition) -> np.ndarray:
    """The kernel's point spread in x and y (and the edge overshoot of sharp kernels).

    Applied in the frequency domain, a batch of slices at a time: one pass instead of four
    separable filters. The periodic boundary is harmless: image borders are air, and local
    boxes carry a blur margin of zeros.
    """
    transfer = kernel_transfer(array.shape[-2:], acq)
    out = np.empty(array.shape, dtype=np.float32)
    for start in range(0, array.shape[0], 16):
        chunk = sfft.rfft2(array[start : start + 16], workers=1)
        chunk *= transfer
        out[start : start + 16] = sfft.irfft2(chunk, s=array.shape[-2:], workers=1)
    return out


def blur_margin_px(acq: Acquisition) -> int:
    """How far (pixels) in_plane_blur spreads a point: padding for local rendering."""
    widest = EDGE_SIGMA_MM if acq.edge_enhancement > 0 else acq.psf_sigma_mm
    return int(np.ceil(4 * widest / acq.pixel_spacing_mm)) + 1


def slice_profile_blur(array: np.ndarray, acq: Acquisition) -> np.ndarray:
    """Slice sensitivity profile along z: a Gaussian with FWHM = slice thickness.

    An explicit convolution one output slice at a time, with edge slices repeated at the ends:
    each step touches a few slices that stay in cache, where scipy's strided axis-0 filter or
    whole-volume temporaries are several times slower.
    """
    sigma = acq.slice_thickness_mm / 2.355 / acq.slice_increment_mm
    if sigma <= 0.3:
        return array
    radius = int(np.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    n = array.shape[0]
    out = np.empty(array.shape, dtype=np.float32)
    term = np.empty(array.shape[1:], dtype=np.float32)
    for k in range(n):
        np.multiply(array[k], taps[radius], out=out[k])
        for offset in range(-radius, radius + 1):
            if offset:
                np.multiply(array[min(max(k + offset, 0), n - 1)], taps[radius + offset], out=term)
                out[k] += term
    return out


KVP_CHOICES = (80.0, 100.0, 120.0, 120.0, 140.0)  # 120 kVp is the most common chest protocol


def add_noise_spikes(image: np.ndarray, body: np.ndarray, rng: np.random.Generator) -> int:
    """Isolated bright voxels (impulse noise) inside the body: calcium look-alikes that no
    reader would annotate. Returns how many were added."""
    candidates = np.flatnonzero(body)
    count = int(rng.integers(20, 150))
    spots = rng.choice(candidates, size=min(count, candidates.size), replace=False)
    image.ravel()[spots] += rng.uniform(150, 500, spots.size).astype(image.dtype)
    return int(spots.size)


def impulse_response_norm(acq: Acquisition) -> float:
    """Root of the summed squared impulse response of the scanner blur (slice profile, then
    kernel): the standard deviation that unit white noise has after passing through it."""
    delta = np.zeros((15, 61, 61), dtype=np.float32)
    delta[7, 30, 30] = 1.0
    response = in_plane_blur(slice_profile_blur(delta, acq), acq)
    return float(np.sqrt((response.astype(np.float64) ** 2).sum()))


def scan(anatomy_hu: np.ndarray, acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
    """The object as the scanner shows it: blurred, with noise of the kernel's texture.

    White noise is added before the blur, so the noise is shaped by the same slice profile
    and kernel as the anatomy, as it is in filtered back-projection: soft kernels give
    blotchy noise, sharp kernels (with their edge overshoot) fine grain, and overlapping
    slices share noise. Its amplitude is set so that the output has the requested SD.
    """
    scale = acq.noise_sd_hu / impulse_response_norm(acq)
    image = rng.standard_normal(anatomy_hu.shape, dtype=np.float32)
    image *= np.float32(scale)
    image += anatomy_hu
    return in_plane_blur(slice_profile_blur(image, acq), acq)
