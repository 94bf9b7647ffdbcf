"""Coronary calcium scoring of one CT volume: registration, score regression, feedback.

    scorer = CalciumScorer()                 # loads the shipped weights (sha256 checked)
    result = scorer.score(ct)                # ct: SimpleITK image in HU
    result.agatston_total, result.category, result.feedback["LAD"], result.flags

1. The registration ConvNet aligns the scan (on a 10 mm grid covering its field of view) to the
   phantom atlas; the atlas heart centre mapped through the predicted affine is where the heart
   is in the scan. Optionally (manifest `registration.heart_search`, on in the shipped 2.0)
   a translation search around the atlas heart refines that point (heart_search.py).
2. The score ConvNet sees a 192 x 192 x 180 mm box around that point (3 x 3 x 2.5 mm; mean
   HU, peak HU, calcium-fraction and candidate-score channels) and returns, per artery, a
   presence probability and a non-negative map whose sums are its direct regression of the
   Agatston scores. Where the manifest gives a coronary region (`score.coronary_region_mm`, a
   box; coronary_region.py), nothing outside it counts.
3. The scoring method (`method`, default the manifest's `score.method`, absent: "regression"):
   * "exact" (exact.py): the network labels the scan's own candidate voxels (HU >= 130) with
     the artery of highest presence where it reaches `score.exact.presence_threshold`, and
     models.agatston scores them; the feedback is each labelled voxel's contribution, and
     the calcium volume is reported;
   * "regression" (paper A): the map's sums; the feedback is the map resampled to the scan.
   The regression's figures are in every result (`regression_total`), whichever method.

Quality flags: `too_few_slices` (under 16 slices or 80 mm), `registration_failure` (the aligned
scan correlates poorly with the atlas and the heart search's local correlation does not vouch
for it, or the transform is at its limits), and
`heart_outside_field_of_view` (under 70 % of the coronary region around the located heart lies
inside the scan: the heart is cut; a dedicated cardiac reconstruction, which leaves much of the
larger score box outside, is not flagged).
`excess_image_noise` (noise.py: the image noise around the located heart is above 35 HU, as
in a lung or bone kernel; the Agatston threshold assumes a standard kernel's noise).
A contrast-enhanced series (contrast.py: header or blood pool around the located heart) is not
scored: the result has the flag `contrast_enhanced` and no score.
"""

from __future__ import annotations

import json
import math
import time
from importlib import resources
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from models.agatston import cac_drs, risk_category
from models.calcium import networks as nets
from models.calcium.contrast import assess_contrast
from models.calcium.coronary_region import region_bounds, region_mask
from models.calcium.exact import (
    DEFAULT_PRESENCE_THRESHOLD,
    ExactScore,
    candidate_presence,
    exact_score,
    nothing_counted,
)
from models.calcium.heart_search import SEARCH_RADIUS_VOX, HeartSearch
from models.calcium.noise import EXCESS_NOISE_FLAG, assess_noise
from models.calcium.preprocess import (
    REG_SIZE,
    REG_SPACING_MM,
    SCORE_SIZE_XYZ,
    SCORE_SPACING_MM,
    covering_region,
    physical_centre,
    registration_volume,
    score_grid,
    score_input,
)
from models.calcium.result import CalciumResult
from models.device import pick_device
from models.files import ModelFileError, sha256

# The shipped model is package data of `models` (models/weights); a wheel is installed
# unpacked, so the folder is a real directory that torch.load and np.load can read.
WEIGHTS_DIR = Path(str(resources.files("models") / "weights"))
MANIFEST = "calcium_manifest.json"
MIN_SLICES = 16
MIN_EXTENT_MM = 80.0
MIN_NCC = 0.5  # below this the alignment is not trusted (validation scans: see the model card)
MIN_HEART_NCC = 0.35  # ... unless the heart search's correlation reaches this (fov_check.py)
MAX_TRUSTED_ROTATION_DEG = 40.0  # trained on up to 15 deg per axis (about 26 deg in all)
MIN_BOX_INSIDE = 0.6  # fraction of the score box inside the scan (manifests without a region)
# The heart is cut when less than this fraction of a coverage measure lies inside the scan
# (chosen by training/calcium/fov_check.py): "coronary_region", the box where calcium counts
# (the coronary extent of the training phantoms widened by the heart's location error), or
# "coronary_core", that extent alone.
HEART_CUT_RULE = ("coronary_core", 0.9)
# 2.3's rule, kept for a manifest that records no coronary extent.
REGION_CUT_RULE = ("coronary_region", 0.7)
METHODS = ("exact", "regression")


def load_manifest(weights_dir: Path = WEIGHTS_DIR) -> dict:
    path = weights_dir / MANIFEST
    if not path.exists():
        raise ModelFileError(f"{path} not found: the calcium model is not installed")
    manifest = json.loads(path.read_text())
    for name, expected in manifest["sha256"].items():
        file = weights_dir / name
        if not file.exists():
            raise ModelFileError(f"{file} is missing")
        if sha256(file) != expected:
            raise ModelFileError(f"{file}: sha256 differs from the model card; refusing to load it")
    return manifest


class CalciumScorer:
    def __init__(
        self,
        weights_dir: Path = WEIGHTS_DIR,
        device: str = "auto",
        heart_search: bool | None = None,
        method: str | None = None,
    ) -> None:
        """heart_search: refine the heart centre by the search (None: as the manifest says);
        method: "exact" or "regression" (None: the manifest's `score.method`, "regression"
        where a manifest predates the key)."""
        self.manifest = load_manifest(weights_dir)
        self.method = method or self.manifest["score"].get("method", "regression")
        if self.method not in METHODS:
            raise ValueError(f"unknown scoring method {self.method!r}; one of {METHODS}")
        exact = self.manifest["score"].get("exact", {})
        self.exact_threshold = float(exact.get("presence_threshold", DEFAULT_PRESENCE_THRESHOLD))
        self.device = pick_device(device)
        files = self.manifest["files"]
        if heart_search is None:
            heart_search = bool(self.manifest["registration"].get("heart_search", False))
        self.heart_search = None
        with np.load(weights_dir / files["atlas"]) as atlas:
            volume = torch.from_numpy(atlas["volume"].astype(np.float32))
            if heart_search:  # the atlas heart probability is only needed for the search
                # The manifest's radius; manifests before it searched +-40 mm.
                radius_mm = self.manifest["registration"].get(
                    "heart_search_radius_mm", SEARCH_RADIUS_VOX * REG_SPACING_MM
                )
                self.heart_search = HeartSearch(
                    nets.registration_scale(volume).numpy(),
                    atlas["heart"].astype(np.float32),
                    self.device,
                    radius_vox=round(radius_mm / REG_SPACING_MM),
                )
        self.atlas = nets.registration_input(volume[None, None]).to(self.device)
        self.registration = nets.RegistrationNet(width=self.manifest["registration"]["width"])
        self.score_net = nets.ScoreNet(
            width=self.manifest["score"]["width"],
            presence_threshold=self.manifest["score"].get("presence_threshold"),
            # Version 1.0's manifest predates the key: its prior is the voxel summary.
            prior=self.manifest["score"].get("prior", "summary"),
        )
        for net, key in ((self.registration, "registration"), (self.score_net, "score")):
            state = torch.load(weights_dir / files[key], map_location="cpu", weights_only=True)
            net.load_state_dict({k: v.float() for k, v in state.items()})
            net.to(self.device).eval()
        if self.device.type == "cuda":
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        region_mm = self.manifest["score"].get("coronary_region_mm")  # absent before 2.0
        self.region_mm = region_mm
        self.region = None if region_mm is None else region_mask(region_mm)
        # The coronary extent itself, without the location margin (manifests from 2.0 record
        # it): (low, high) x y z mm from the located heart centre. Unlike the region it need
        # not hold the centre (a small training set's calcium may lie to one side of it).
        extent = self.manifest["score"].get("coronary_region", {})
        self.core_bounds = None
        if "lesion_low_mm" in extent and "lesion_high_mm" in extent:
            low, high = np.asarray(extent["lesion_low_mm"]), np.asarray(extent["lesion_high_mm"])
            if low.shape == high.shape == (3,) and np.all(low < high):
                self.core_bounds = (low.astype(float), high.astype(float))
        self.name = f"{self.manifest['name']} {self.manifest['version']}"
        self.registration_passes = int(self.manifest["registration"].get("passes", 1))
        with torch.inference_mode():
            self._atlas_features = self.registration.trunk(self.atlas).flatten(1)

    @torch.inference_mode()
    def locate_heart(self, ct: sitk.Image) -> tuple[np.ndarray, dict, float]:
        """Heart centre in the scan (mm), the transform, and the alignment's correlation."""
        fine = nets.registration_scale(torch.from_numpy(registration_volume(ct)).to(self.device))
        a, t, ncc, shift_mm, heart_ncc = self.align_heart(fine)
        transform = {**_describe_transform(a, t), "atlas_correlation": round(ncc, 4)}
        transform["passes"] = self.registration_passes
        if self.heart_search is not None:
            transform["heart_search_mm"] = [round(float(v), 2) for v in shift_mm]
            transform["heart_correlation"] = round(heart_ncc, 4)
        # A transform at the edge of what the network can express is not a trusted alignment.
        limits = (
            float(t.abs().max()) > 0.95 * nets.MAX_TRANSLATION_MM
            or transform["rotation_deg"] > MAX_TRUSTED_ROTATION_DEG
        )
        centre = physical_centre(ct) + heart_offset_mm(a, t, shift_mm)
        return centre, transform, ncc if not limits else -1.0

    @torch.inference_mode()
    def align_heart(self, fine: torch.Tensor):
        """The registration of one scan on the 5 mm grid (80^3, registration units).

        Returns (A, t) of the network (x_scan = A x_atlas + t, mm about the grid centre, float64
        on the CPU), the aligned scan's correlation with the atlas, the heart search's shift in
        the atlas frame (mm, x y z) and its correlation (zero and None without the search)."""
        half_extent_mm = REG_SIZE * REG_SPACING_MM / 2
        moving = nets.registration_input(fine[None, None], scaled=True)
        a, t, aligned = nets.align(
            self.registration, self._atlas_features, moving, half_extent_mm,
            self.registration_passes,
        )  # fmt: skip
        ncc = float(_ncc(self.atlas, aligned))
        shift_vox, heart_ncc = np.zeros(3), None
        if self.heart_search is not None:
            # On the 5 mm grid, the scan resampled through the network's affine.
            shift_vox, heart_ncc = self.heart_search(
                nets.warp(fine[None, None], a, t, half_extent_mm)
            )
        a, t = a[0].double().cpu(), t[0].double().cpu()
        return a, t, ncc, torch.from_numpy(shift_vox * REG_SPACING_MM), heart_ncc

    def score(self, ct: sitk.Image) -> CalciumResult:
        start = time.perf_counter()
        if ct.GetDimension() != 3:
            raise ValueError(f"a 3-D CT volume is needed, got {ct.GetDimension()}-D")
        flags = []
        extent = ct.GetSize()[2] * ct.GetSpacing()[2]
        if ct.GetSize()[2] < MIN_SLICES or extent < MIN_EXTENT_MM:
            flags.append("too_few_slices")
        centre, transform, ncc = self.locate_heart(ct)
        if not alignment_trusted(ncc, transform.get("heart_correlation")):
            flags.append("registration_failure")
        if self.heart_cut(ct, centre):
            flags.append("heart_outside_field_of_view")
        noise = assess_noise(ct, centre)
        if noise.excessive:
            flags.append(EXCESS_NOISE_FLAG)
        contrast = assess_contrast(ct, centre)
        if contrast.enhanced:  # Agatston is not defined on contrast-enhanced CT: no score
            return CalciumResult.not_scored(
                flags, centre, transform, contrast.to_dict(), model=self.name, method=self.method,
                seconds=time.perf_counter() - start, device=str(self.device), noise=noise.to_dict(),
            )  # fmt: skip

        map_grid, presence = self.score_network(ct, centre)
        outside = 0.0
        if self.region is not None:
            counted = map_grid * self.region
            outside = float(map_grid.sum() - counted.sum())
            map_grid = counted
        regression = {a: float(map_grid[i].sum()) for i, a in enumerate(nets.ARTERY_CHANNELS)}
        volume, volume_per_artery = None, {}
        if self.method == "exact":
            exact = self.score_exact(ct, centre, presence)
            per_artery = dict(exact.result.per_artery)
            volume = exact.result.volume_mm3
            volume_per_artery = dict(exact.result.volume_per_artery_mm3)
            outside, feedback = exact.outside_region_au, exact.feedback
        else:
            per_artery = dict(regression)
            feedback = _feedback(map_grid, centre, ct)
        total = float(sum(per_artery.values()))
        return CalciumResult(
            agatston_total=total,
            agatston_per_artery=per_artery,
            category=risk_category(total),
            cacdrs=cac_drs(total),
            flags=flags,
            heart_centre_mm=[float(v) for v in centre],
            transform=transform,
            feedback=feedback,
            seconds=time.perf_counter() - start,
            device=str(self.device),
            model=self.name,
            outside_region_au=max(outside, 0.0),
            contrast=contrast.to_dict(),
            noise=noise.to_dict(),
            method=self.method,
            volume_mm3_total=volume,
            volume_mm3_per_artery=volume_per_artery,
            regression_total=float(sum(regression.values())),
            regression_per_artery=regression,
        )

    def coverage(self, ct: sitk.Image, centre: np.ndarray) -> dict[str, float]:
        """How much of the score box, of the coronary region (where calcium counts; the box
        again for a manifest without one) and of the coronary extent within it (where a
        manifest records it) around the located heart lies inside the scan."""
        box = fraction_inside(ct, centre, *score_box_bounds())
        region = box if self.region_mm is None else fraction_inside(
            ct, centre, *region_bounds(self.region_mm)
        )  # fmt: skip
        cover = {"score_box": box, "coronary_region": region}
        if self.core_bounds is not None:
            cover["coronary_core"] = fraction_inside(ct, centre, *self.core_bounds)
        return cover

    def heart_cut(self, ct: sitk.Image, centre: np.ndarray) -> bool:
        """Whether the scan cuts the heart: the HEART_CUT_RULE's coverage around the located
        heart is too low (training/calcium/fov_check.py chose it). The score box is larger
        than the heart (the network's context), so a dedicated cardiac reconstruction leaves
        much of it outside the scan with the heart whole; the box rule of version 2.2 and
        earlier (MIN_BOX_INSIDE) remains for a manifest without a region, and the region's
        for one without the coronary extent."""
        cover = self.coverage(ct, centre)
        if self.region_mm is None:
            return cover["score_box"] < MIN_BOX_INSIDE
        measure, minimum = HEART_CUT_RULE if HEART_CUT_RULE[0] in cover else REGION_CUT_RULE
        return cover[measure] < minimum

    def score_network(self, ct: sitk.Image, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One forward pass of the score network on the box around `centre`: the direct
        regression's map and the presence probabilities, both (3, z, y, x) on the score grid."""
        spacing = ct.GetSpacing()
        thickness = _slice_thickness(ct)
        features = nets.acquisition_features(spacing[2], thickness, 0.5 * (spacing[0] + spacing[1]))
        image = torch.from_numpy(score_input(ct, centre)).to(self.device)[None]
        acquisition = torch.tensor([features], device=self.device)
        with torch.inference_mode():
            factors = self.score_net.forward_factors(image, acquisition)
            score_map = self.score_net.regression_map(*factors)[0]
            presence = torch.sigmoid(factors[1])[0]
        return score_map.float().cpu().numpy(), presence.float().cpu().numpy()

    def candidates(self, ct: sitk.Image, centre: np.ndarray, presence: np.ndarray):
        """The scan's candidate voxels in the score box and region, with their presence
        (exact.CandidatePresence; None when the box misses the scan)."""
        return candidate_presence(ct, centre, presence, self.region_mm)

    def score_exact(self, ct: sitk.Image, centre: np.ndarray, presence: np.ndarray) -> ExactScore:
        """The exact method's score (exact.ExactScore) at the manifest's threshold."""
        candidates = self.candidates(ct, centre, presence)
        if candidates is None:
            return nothing_counted()
        return exact_score(candidates, self.exact_threshold)


def alignment_trusted(ncc: float, heart_ncc: float | None) -> bool:
    """Whether the located heart may be trusted: the aligned scan correlates with the atlas
    over the registration's whole 400 mm grid (MIN_NCC), or, where it does not, the heart
    search's local correlation around the heart vouches for it (MIN_HEART_NCC). A cardiac
    field of view of 160-220 mm fills little of the grid and correlates poorly with the
    whole-chest atlas although its heart is found (training/calcium/fov_check.py). A transform
    at the network's limits (ncc -1 from locate_heart) is never trusted."""
    if ncc >= MIN_NCC:
        return True
    return ncc > -1.0 and heart_ncc is not None and heart_ncc >= MIN_HEART_NCC


def heart_offset_mm(a: torch.Tensor, t: torch.Tensor, shift_mm: torch.Tensor) -> np.ndarray:
    """Where the atlas heart centre, moved by the search's shift, lies relative to the
    registration grid's centre (x_scan = A x_atlas + t)."""
    return (t + a @ shift_mm).numpy()


def _describe_transform(a: torch.Tensor, t: torch.Tensor) -> dict:
    """x_moving = R S x_atlas + t as numbers a person can read: the matrix, the translation,
    the total rotation angle and the scale along each axis (the lengths of A's columns)."""
    scale = torch.linalg.norm(a, dim=0)
    cos_angle = (float(torch.trace(a / scale)) - 1) / 2
    return {
        "matrix": [[round(float(v), 5) for v in row] for row in a],
        "translation_mm": [round(float(v), 2) for v in t],
        "rotation_deg": round(math.degrees(math.acos(max(-1.0, min(1.0, cos_angle)))), 2),
        "scale": [round(float(v), 4) for v in scale],
    }


def _ncc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a - a.mean(), b - b.mean()
    return (a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum() + 1e-8)


def _slice_thickness(ct: sitk.Image) -> float:
    """Nominal slice thickness from the DICOM header when the reader kept it, else the
    slice spacing (NIfTI carries no thickness)."""
    if ct.HasMetaDataKey("0018|0050"):
        try:
            return float(ct.GetMetaData("0018|0050"))
        except ValueError:
            pass
    return float(ct.GetSpacing()[2])


def score_box_bounds() -> tuple[np.ndarray, np.ndarray]:
    """(low, high) x y z mm of the score box about its centre."""
    half = (np.asarray(SCORE_SIZE_XYZ) - 1) / 2 * np.asarray(SCORE_SPACING_MM)
    return -half, half


def fraction_inside(
    ct: sitk.Image, centre: np.ndarray, low: np.ndarray, high: np.ndarray, steps: int = 15
) -> float:
    """Fraction of the box [centre + low, centre + high] (x y z mm, on a lattice of `steps`
    points per axis) that falls inside the scan."""
    axes = [np.linspace(c + lo, c + hi, steps) for c, lo, hi in zip(centre, low, high, strict=True)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    # physical = origin + direction @ (index * spacing), solved for the index of every point
    direction = np.asarray(ct.GetDirection()).reshape(3, 3)
    offsets = np.linalg.solve(direction, (points - np.asarray(ct.GetOrigin())).T).T
    index = offsets / np.asarray(ct.GetSpacing())
    size = np.asarray(ct.GetSize())
    inside = np.all((index >= -0.5) & (index <= size - 0.5), axis=1)
    return float(inside.mean())


# Score-grid cells below this carry no visible feedback: a cell needs about 0.23 AU to reach the
# region threshold of node/results/regions.py once spread over the scan's voxels.
FEEDBACK_MIN_CELL_AU = 0.01


def _feedback(score_map: np.ndarray, centre: np.ndarray, ct: sitk.Image) -> dict[str, sitk.Image]:
    """The score maps on the scan's own voxel grid, in Agatston units per scan voxel.

    Only the part of the scan under the cells that carry feedback is resampled (the bounding
    box of cells with at least FEEDBACK_MIN_CELL_AU, plus one cell for the interpolation):
    resampling the whole score box onto a fine scan grid was the costliest step of scoring.
    Each image has the scan's spacing and direction and an origin on the scan's grid, so it
    overlays the scan exactly; `paste_into_scan` makes a full-size image when one is needed.
    No cell above the floor: no feedback images.
    """
    carrying = np.argwhere(score_map.max(axis=0) >= FEEDBACK_MIN_CELL_AU)
    if len(carrying) == 0:
        return {}
    low = np.maximum(carrying.min(axis=0) - 1, 0)
    high = np.minimum(carrying.max(axis=0) + 2, score_map.shape[1:])
    part_map = score_map[:, low[0] : high[0], low[1] : high[1], low[2] : high[2]]
    base = score_grid(centre)
    spacing = list(SCORE_SPACING_MM)
    origin = base.TransformIndexToPhysicalPoint([int(v) for v in low[::-1]])
    components = []
    for channel in part_map:
        image = sitk.GetImageFromArray((channel / float(np.prod(spacing))).astype(np.float32))
        image.SetSpacing(spacing)
        image.SetOrigin(origin)  # the map is on the score grid itself
        components.append(image)
    region = covering_region(ct, components[0])
    if region is None:
        return {}
    voxel = float(np.prod(ct.GetSpacing()))
    resampled = sitk.Resample(
        sitk.Compose(components), region, sitk.Transform(), sitk.sitkLinear, 0.0
    )
    return {
        artery: sitk.VectorIndexSelectionCast(resampled, i, sitk.sitkFloat32) * voxel
        for i, artery in enumerate(nets.ARTERY_CHANNELS)
    }
