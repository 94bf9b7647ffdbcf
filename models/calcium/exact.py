"""The exact scoring method: the network decides, the Agatston definition measures.

The score network's map (networks.ScoreNet) is a learned regression: presence x correction x
candidate prior, summed. Its magnitudes carry the calibration of the phantoms it was trained on
(issue 25: on phantoms of another generator, totals came out a third of the truth although the
map lay on the true lesions). Here only the network's decision is used:

1. every native candidate voxel (HU >= 130) of the scan inside the score box and the coronary
   region gets the network's per-artery presence probability of the score cell it falls in;
2. it is labelled with the artery of highest presence when that presence reaches the
   threshold, and left unlabelled otherwise: so a candidate component that the coronary
   boundary splits is labelled voxel by voxel;
3. the score, the volume and each voxel's contribution come from models.agatston on the scan's
   own voxels and these labels (per-slice 8-connected components of each artery's voxels,
   1 mm^2 minimum area, density weight of the component's peak, slice-increment factor).

Presence is looked up at the nearest score cell, not interpolated: a cell's presence is the
network's decision about exactly the native voxels whose nearest cell it is (the candidate-score
channel and the truth's score density are binned to the nearest cell, preprocess.grid_indices,
and the placement loss trains presence per cell on them). Trilinear interpolation would mix a
coronary cell's "yes" with the neighbouring aortic wall's "no" on voxels the network never
judged that way.

Torch-free: the presence grid comes in as a numpy array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from models.agatston import CALCIUM_THRESHOLD_HU, AgatstonResult, agatston, voxel_contributions
from models.calcium.coronary_region import inside_region, region_bounds
from models.calcium.preprocess import covering_region, grid_indices, score_grid
from models.labels import ARTERIES, Label

# Label values the labelled candidates get, in ARTERIES order (models.agatston scores them).
ARTERY_LABELS = (Label.CAC_LAD, Label.CAC_LCX, Label.CAC_RCA)
# Used when a manifest asks for the exact method without a chosen threshold: a probability's
# own decision point.
DEFAULT_PRESENCE_THRESHOLD = 0.5
FEEDBACK_MARGIN_VOX = 1  # voxels around the labelled calcium in the feedback sub-grid


@dataclass
class CandidatePresence:
    """The scan's candidate voxels under the score box and the network's presence at each."""

    region: sitk.Image  # the part of the scan that covers the score box
    hu: np.ndarray  # its voxels (z, y, x), HU
    where: np.ndarray  # (N,) flat indices into `hu` of the candidates inside box and region
    presence: np.ndarray  # (N, 3) presence probability per artery (ARTERIES order)
    outside: np.ndarray  # (M,) flat indices of candidates in the box but outside the region
    presence_outside: np.ndarray  # (M, 3)

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        sx, sy, sz = self.region.GetSpacing()
        return (sz, sy, sx)


def candidate_presence(
    ct: sitk.Image,
    centre_mm: np.ndarray,
    presence_grid: np.ndarray,
    region_mm: dict | None,
) -> CandidatePresence | None:
    """Presence (3, z, y, x) on the score grid around `centre_mm`, read at each native
    candidate voxel (nearest cell). None when the score box misses the scan."""
    ref = score_grid(centre_mm, presence_grid.shape[1:][::-1])
    region = covering_region(ct, ref)
    if region is None:
        return None
    hu = sitk.GetArrayFromImage(region)
    where = np.flatnonzero(hu >= CALCIUM_THRESHOLD_HU)
    zyx = np.stack(np.unravel_index(where, hu.shape))
    xyz, in_box = grid_indices(region, zyx, ref)
    where, zyx, xyz = where[in_box], zyx[:, in_box], xyz[in_box]
    presence = presence_grid[:, xyz[:, 2], xyz[:, 1], xyz[:, 0]].T.astype(np.float32)
    if region_mm is None:
        coronary = np.ones(len(where), dtype=bool)
    else:
        origin = np.asarray(region.GetOrigin())
        spacing = np.asarray(region.GetSpacing())
        direction = np.asarray(region.GetDirection()).reshape(3, 3)
        world = origin + (zyx[::-1].T * spacing) @ direction.T  # (N, 3) x, y, z mm
        low, high = region_bounds(region_mm)
        coronary = inside_region((world - np.asarray(centre_mm))[:, ::-1], low, high)
    return CandidatePresence(
        region=region,
        hu=hu,
        where=where[coronary],
        presence=presence[coronary],
        outside=where[~coronary],
        presence_outside=presence[~coronary],
    )


def label_candidates(presence: np.ndarray, threshold: float) -> np.ndarray:
    """(N,) index into ARTERIES of each candidate's artery (highest presence, when it reaches
    `threshold`), -1 for an unlabelled candidate."""
    if len(presence) == 0:
        return np.zeros(0, dtype=np.int64)
    best = presence.argmax(axis=1)
    reached = presence[np.arange(len(presence)), best] >= threshold
    return np.where(reached, best, -1)


def label_array(shape: tuple[int, ...], where: np.ndarray, artery: np.ndarray) -> np.ndarray:
    """A label map (uint8, models.labels values) of the labelled candidates."""
    labels = np.zeros(int(np.prod(shape)), dtype=np.uint8)
    lut = np.array([int(v) for v in ARTERY_LABELS], dtype=np.uint8)
    chosen = artery >= 0
    labels[where[chosen]] = lut[artery[chosen]]
    return labels.reshape(shape)


@dataclass
class ExactScore:
    result: AgatstonResult  # score, per artery, volume: models.agatston on the labelled voxels
    outside_region_au: float  # what the same rule would have counted outside the region
    feedback: dict[str, sitk.Image]  # per-voxel contributions, AU, on a sub-grid of the scan


def exact_score(candidates: CandidatePresence, threshold: float) -> ExactScore:
    """The Agatston score (models.agatston) of the candidates the network labels at
    `threshold`, with each labelled voxel's contribution as the feedback."""
    shape, spacing = candidates.hu.shape, candidates.spacing_zyx
    labels = label_array(shape, candidates.where, label_candidates(candidates.presence, threshold))
    result = agatston(candidates.hu, labels, spacing)
    outside_labels = label_array(
        shape, candidates.outside, label_candidates(candidates.presence_outside, threshold)
    )
    outside = (
        agatston(candidates.hu, outside_labels, spacing).total if outside_labels.any() else 0.0
    )
    feedback = contribution_images(candidates, labels) if result.total > 0 else {}
    return ExactScore(result=result, outside_region_au=float(outside), feedback=feedback)


def nothing_counted() -> ExactScore:
    """The exact method's result where the score box misses the scan."""
    zero = dict.fromkeys(ARTERIES, 0.0)
    empty = AgatstonResult(total=0.0, per_artery=zero, volume_mm3=0.0, volume_per_artery_mm3=zero)
    return ExactScore(result=empty, outside_region_au=0.0, feedback={})


def contribution_images(candidates: CandidatePresence, labels: np.ndarray) -> dict[str, sitk.Image]:
    """Each counted voxel's share of the score (models.agatston.voxel_contributions), per
    artery, on one sub-grid of the scan around all counted voxels: the spacing, direction and
    grid of the scan, so node/results (regions, SEG, overlay) read them as before."""
    contributions = voxel_contributions(candidates.hu, labels, candidates.spacing_zyx)
    counted = np.concatenate([zyx for zyx, _ in contributions.values()], axis=1)
    shape = np.asarray(candidates.hu.shape)
    low = np.maximum(counted.min(axis=1) - FEEDBACK_MARGIN_VOX, 0)
    high = np.minimum(counted.max(axis=1) + FEEDBACK_MARGIN_VOX + 1, shape)
    origin = candidates.region.TransformIndexToPhysicalPoint([int(v) for v in low[::-1]])
    images = {}
    for artery in ARTERIES:
        zyx, value = contributions[artery]
        array = np.zeros(high - low, dtype=np.float32)
        array[tuple(zyx - low[:, None])] = value
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(candidates.region.GetSpacing())
        image.SetDirection(candidates.region.GetDirection())
        image.SetOrigin(origin)
        images[artery] = image
    return images
